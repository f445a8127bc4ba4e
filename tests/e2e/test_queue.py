"""The queue against the real stack: full clusters, order, backfill, fairness, gangs, races.

The session cluster is shared by every e2e test (4x8 H100, 2x8 A100, 2x1 A10,
2 CPU-only nodes), so each test here pins its runs to one GPU model or a fleet,
waits for that capacity to be idle before it starts, and stops what it started.
Runs that should end by themselves carry ``KWOK_RUN_FOR`` (KWOK completes the
pod after it); the others run until stopped.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shared import kube, tasks
from shared.configuration.parse import parse_run_configuration
from shared.errors import TemporaryError
from shared.placement import placements
from shared.queueing import keys
from shared.queueing.commit import FENCED, Change, Writer
from shared.settings import SchedulingSettings
from shared.state.jobs import jobs_for
from shared.state.records import Event, Job, Placement, Run, RunStatus
from tests.polling import wait_until
from tests.stack import Stack
from workers import scheduling, sweeps
from workers.context import WorkerContext, build_context

pytestmark = pytest.mark.integration

A100_NODES = ("kwok-a100-0", "kwok-a100-1")
H100_NODES = tuple(f"kwok-h100-{i}" for i in range(4))
A10_NODES = ("kwok-a10-0", "kwok-a10-1")
GPUS_PER_NODE = {**dict.fromkeys(A100_NODES + H100_NODES, 8), **dict.fromkeys(A10_NODES, 1)}


class Queue:
    """Submit, read and stop runs through the API; read placements from the store."""

    def __init__(self, stack: Stack, ctx: WorkerContext) -> None:
        self.stack = stack
        self.ctx = ctx
        self.started: list[tuple[str, str]] = []

    def submit(self, name: str, conf: dict[str, Any], *, project: str = "main") -> None:
        body = {"configuration": {"type": "task", "name": name, "commands": ["train"], **conf}}
        with self.stack.client() as c:
            r = c.post(f"/api/projects/{project}/runs", json=body)
        assert r.status_code == 202, r.text
        self.started.append((project, name))

    def run(self, name: str, *, project: str = "main") -> dict[str, Any]:
        with self.stack.client() as c:
            r = c.get(f"/api/projects/{project}/runs/{name}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def events(self, name: str, *, project: str = "main") -> list[dict[str, Any]]:
        with self.stack.client() as c:
            events: list[dict[str, Any]] = c.get(
                f"/api/projects/{project}/runs/{name}/events"
            ).json()
        return events

    def wait_status(
        self, name: str, *statuses: str, project: str = "main", timeout: float = 30
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            run = self.run(name, project=project)
            return run if run["status"] in statuses else None

        try:
            return wait_until(check, timeout=timeout, what=f"{name} {'/'.join(statuses)}")
        except AssertionError as e:
            detail = self.run(name, project=project)
            raise AssertionError(f"{e}\nrun: {detail}\n{self.stack.logs()}") from None

    def stop(self, name: str, *, project: str = "main") -> None:
        with self.stack.client() as c:
            r = c.post(f"/api/projects/{project}/runs/{name}/stop", json={"abort": True})
        assert r.status_code == 200, r.text

    def held(self) -> dict[str, Counter[str]]:
        """Node -> project -> GPUs held by Berth's jobs, as of one moment.

        Every job is read in one MULTI: read one by one, a job released early and a
        job placed late could both show as holding, an over-commit that never was.
        """
        store = self.ctx.store
        runs = placements.active_runs(store)
        pipe = store.r.pipeline(transaction=True)
        for run, _ in runs:
            for job_id in run.job_ids:
                pipe.hget(store.key("job", job_id), "d")
        raw = iter(pipe.execute())
        per_node: dict[str, Counter[str]] = {}
        for run, _ in runs:
            for _job_id in run.job_ids:
                data = next(raw)
                job = Job.model_validate_json(data) if data else None
                if job and job.status in placements.HOLDING and job.placement is not None:
                    node = per_node.setdefault(job.placement.node, Counter())
                    node[run.project] += job.placement.gpus
        return per_node

    def overcommitted(self) -> dict[str, int]:
        """Nodes promised more GPUs than they have (always empty, or it is a bug)."""
        return {
            node: sum(by_project.values())
            for node, by_project in self.held().items()
            if sum(by_project.values()) > GPUS_PER_NODE.get(node, 0)
        }

    def wait_idle(self, nodes: tuple[str, ...]) -> None:
        """Wait until no Berth job of any test holds GPUs on ``nodes``."""
        wait_until(
            lambda: not any(self.held().get(n) for n in nodes),
            timeout=60,
            what=f"{', '.join(nodes)} idle",
        )

    def finish_all(self) -> None:
        for project, name in self.started:
            if not RunStatus(self.run(name, project=project)["status"]).is_finished:
                self.stop(name, project=project)
        for project, name in self.started:
            self.wait_status(name, "done", "failed", "terminated", project=project, timeout=60)


@pytest.fixture
def queue(stack: Stack) -> Iterator[Queue]:
    ctx = build_context(stack.settings())
    q = Queue(stack, ctx)
    try:
        yield q
        q.finish_all()
    finally:
        ctx.close()


def _placed_at(q: Queue, name: str, project: str = "main") -> float:
    events = q.events(name, project=project)
    return float(min(e["at"] for e in events if e["status"] == "provisioning"))


def _job_statuses(q: Queue, run_id: str) -> set[str]:
    """The run's job statuses read in one MULTI, so they are one moment's, never torn
    (reading job by job, as the API does, can straddle a placement)."""
    store = q.ctx.store
    run = store.get_run(run_id)
    pipe = store.r.pipeline(transaction=True)
    for job_id in run.job_ids:
        pipe.hget(store.key("job", job_id), "d")
    return {str(json.loads(raw)["status"]) for raw in pipe.execute()}


def _hold(gpu: str) -> dict[str, Any]:
    return {"resources": {"gpu": gpu}}


def _brief(gpu: str, seconds: int = 2) -> dict[str, Any]:
    return {"resources": {"gpu": gpu}, "env": {"KWOK_RUN_FOR": f"{seconds}s"}}


def test_a_full_cluster_queues_twenty_runs_and_admits_them_in_priority_then_fifo_order(
    queue: Queue,
) -> None:
    queue.wait_idle(A100_NODES)
    for i in range(2):
        queue.submit(f"fill-{i}", _hold("A100:8"))
    for i in range(2):
        queue.wait_status(f"fill-{i}", "running")
    priorities = [0, 10, 0, 50, 10] * 4
    for i, priority in enumerate(priorities):
        queue.submit(f"queued-{i}", {**_brief("A100:1"), "priority": priority})
    expected = [
        f"queued-{i}" for i in sorted(range(20), key=lambda i: (-priorities[i], i))
    ]  # submission order is index order

    # Places 1-8 are in the runs' records, 9-20 published apart (tests/e2e/conftest.py):
    # the API shows both alike.
    def all_pending() -> bool:
        return all(queue.run(n)["reason"].endswith("of 20 in main's queue") for n in expected)

    wait_until(all_pending, timeout=20, what="20 pending runs with positions")
    for position, name in enumerate(expected, start=1):
        run = queue.run(name)
        assert run["status"] == "pending"
        assert f"position {position} of 20 in main's queue" in run["reason"], run["reason"]
        assert run["reason"].startswith("waiting for capacity: 1x A100")

    queue.stop("fill-0")  # frees 8 GPUs: the first 8 in order start, the rest wait
    for name in expected[:8]:
        queue.wait_status(name, "provisioning", "running", "done")
        assert not queue.overcommitted()
    queue.stop("fill-1")
    for name in expected:
        queue.wait_status(name, "done", timeout=60)
    # Each GPU freed (by a fill run or a finished run) went to the next run in order.
    admitted = sorted(expected, key=lambda n: _placed_at(queue, n))
    assert admitted == expected


def test_a_small_run_backfills_and_the_big_run_still_starts(queue: Queue) -> None:
    queue.wait_idle(A100_NODES)
    queue.submit("six-a", _hold("A100:6"))
    queue.wait_status("six-a", "running")
    queue.submit("six-b", _hold("A100:6"))
    queue.wait_status("six-b", "running")
    queue.submit("big", _hold("A100:8"))
    reason = queue.wait_status("big", "pending")["reason"]
    wait_until(lambda: "held for it" in queue.run("big")["reason"], timeout=10, what="reserve")
    reserved = next(n for n in A100_NODES if n in queue.run("big")["reason"])
    other = next(n for n in A100_NODES if n != reserved)
    for i in range(3):
        queue.submit(f"small-{i}", _hold("A100:1"))

    # Two small runs fit on the node not held for big; the third waits behind them.
    for i in range(2):
        run = queue.wait_status(f"small-{i}", "running")
        assert run["jobs"][0]["node"] == other
    assert queue.wait_status("small-2", "pending")["status"] == "pending"
    assert queue.run("big")["status"] == "pending", reason

    holder = next(n for n in ("six-a", "six-b") if queue.run(n)["jobs"][0]["node"] == reserved)
    queue.stop(holder)
    big = queue.wait_status("big", "running")
    assert big["jobs"][0]["node"] == reserved
    assert queue.run("small-2")["status"] == "pending"
    assert not queue.overcommitted()


def test_two_projects_shares_converge(queue: Queue) -> None:
    queue.wait_idle(A100_NODES)
    for i in range(8):
        queue.submit(f"first-{i}", _brief("A100:2", 3))  # main takes all 16 GPUs first
    for i in range(8):
        queue.submit(f"main-{i}", _hold("A100:2"))
        queue.submit(f"other-{i}", _hold("A100:2"), project="other")

    def converged() -> Counter[str] | None:
        held: Counter[str] = Counter()
        for node in A100_NODES:
            held.update(queue.held().get(node, Counter()))
        assert sum(held.values()) <= 16
        return held if held["main"] == 8 and held["other"] == 8 else None

    # As main's first runs end, the freed GPUs go to other until both hold half.
    shares = wait_until(converged, timeout=45, what="8 A100 each for main and other")
    assert shares == {"main": 8, "other": 8}
    assert not queue.overcommitted()


def test_a_four_node_gang_is_never_partially_started(
    queue: Queue, stack: Stack, kube_admin: kube.Kube
) -> None:
    queue.wait_idle(H100_NODES)
    queue.submit("squatter", _hold("H100:1"))
    queue.wait_status("squatter", "running")
    queue.submit("gang", {"nodes": 4, **_hold("H100:8")})
    queue.wait_status("gang", "pending")

    def pods() -> list[Any]:
        items: list[Any] = kube_admin.call(
            kube_admin.core.list_namespaced_pod,
            stack.namespace,
            label_selector=f"{kube.LABEL_RUN}=gang",
        ).items
        return items

    run_id = queue.run("gang")["id"]

    def whole_or_nothing() -> bool:
        # Pods first: a pod is created only after its job left the queue, so statuses
        # read after the list show that; read before it, a placement in between
        # would look like a pod of a waiting gang.
        present = len(pods())
        statuses = _job_statuses(queue, run_id)
        started = statuses - {"pending", "submitted"}
        assert not (started and statuses & {"pending", "submitted"}), statuses
        assert present in (0, 4) or started
        return statuses == {"running"}

    for _ in range(3):  # passes woken by hand change nothing while one node is short
        scheduling.schedule_pass(queue.ctx)
        assert not whole_or_nothing()
        assert pods() == []
    queue.stop("squatter")
    wait_until(whole_or_nothing, timeout=30, what="the whole gang running")
    nodes = sorted(p.spec.node_name for p in pods())
    assert nodes == list(H100_NODES)


def test_a_gang_whose_pods_do_not_all_run_goes_back_to_the_queue(
    queue: Queue, stack: Stack, kube_admin: kube.Kube
) -> None:
    queue.wait_idle(A10_NODES)
    ctx = queue.ctx
    conf = parse_run_configuration(
        "type: task\nname: stuck-gang\nnodes: 2\ncommands: [train]\nresources: {gpu: A10:1}\n"
    )
    # Placed by hand where the kube-scheduler can never bind it (GPU pods on CPU nodes),
    # as if the inventory had been wrong, and left to the scheduler (as after a kubelet's
    # refusal: KWOK has no admission to refuse a pod bound to it): the pods stay Pending.
    run = Run(
        id="stuckgang" + str(int(time.time())),
        project="main",
        name="stuck-gang",
        user="admin",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
        status=RunStatus.PROVISIONING,
    )
    jobs = jobs_for(run, conf)
    run.job_ids = [j.id for j in jobs]
    for job, node in zip(jobs, ("kwok-cpu-0", "kwok-cpu-1"), strict=True):
        job.status = RunStatus.PROVISIONING
        job.placement = Placement(node=node, gpu_resource="nvidia.com/gpu", gpus=1)
        job.scheduler_binds = True
    ctx.store.create_run(run, jobs, Event(at=time.time(), kind="status", message="by hand"))
    queue.started.append(("main", "stuck-gang"))
    ctx.store.r.hset(keys.key(ctx.store, keys.ADMITTED), run.id, repr(time.time() - 60))
    for job in jobs:
        tasks.send(ctx.celery, tasks.PROVISION_JOB, job.id)

    def pods() -> list[Any]:
        items: list[Any] = kube_admin.call(
            kube_admin.core.list_namespaced_pod,
            stack.namespace,
            label_selector=f"{kube.LABEL_RUN}=stuck-gang",
        ).items
        return items

    # Rank 0 never gets an IP, so rank 1 is never even created: the gang is stuck.
    stuck = wait_until(pods, timeout=30, what="the gang's first pod")
    assert [p.status.phase for p in stuck] == ["Pending"]

    short = stack.settings().model_copy(
        update={"scheduling": SchedulingSettings(gang_ready_timeout_s=1.0)}
    )
    impatient = build_context(short)
    try:
        sweeps.sweep(impatient)
    finally:
        impatient.close()

    events = queue.events("stuck-gang")
    assert any("gang not ready" in e["message"] for e in events), events
    # Requeued whole, the gang is placed again on nodes that can take it, and runs.
    running = queue.wait_status("stuck-gang", "running", timeout=30)
    assert sorted(j["node"] for j in running["jobs"]) == list(A10_NODES)
    assert sorted(p.spec.node_name for p in pods()) == list(A10_NODES)


def test_two_scheduler_passes_at_once_never_over_commit_a_node(queue: Queue, stack: Stack) -> None:
    queue.wait_idle(A100_NODES)
    contexts = [build_context(stack.settings()) for _ in range(3)]
    try:
        for step in range(6):
            for i in range(4):
                queue.submit(f"race-{step}-{i}", _hold(f"A100:{1 + (i + step) % 3}"))
            barrier = threading.Barrier(len(contexts))
            errors: list[BaseException] = []

            def one_pass(
                ctx: WorkerContext,
                barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors,
            ) -> None:
                try:
                    barrier.wait(timeout=10)
                    scheduling.run_pass(ctx)  # no lock: only the fence keeps them apart
                except TemporaryError:
                    pass  # lost the race five times over: the designed "try again later"
                except BaseException as e:  # reported below, in the test's thread
                    errors.append(e)

            threads = [threading.Thread(target=one_pass, args=(c,)) for c in contexts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert not errors, errors
            assert not queue.overcommitted(), f"step {step}: {queue.held()}"
        held = sum(sum(queue.held().get(n, Counter()).values()) for n in A100_NODES)
        assert held >= 8  # the passes did place work
    finally:
        for ctx in contexts:
            ctx.close()


def test_a_placement_made_after_a_pass_read_capacity_fences_that_pass_off(
    queue: Queue,
) -> None:
    store = queue.ctx.store
    version = int(store.r.get(keys.key(store, keys.CAPACITY_VERSION)) or 0)
    writer = Writer(store)
    first = writer.write(Change(run=None, run_id="fence-probe"), fence=version)
    second = writer.write(Change(run=None, run_id="fence-probe"), fence=version)
    assert first == version + 1
    assert second == FENCED


def test_a_fleet_restricts_placement(queue: Queue, stack: Stack) -> None:
    queue.wait_idle(A100_NODES)
    fleet = {"type": "fleet", "name": "one-a100", "nodes": "0..1", "resources": {"gpu": "A100"}}
    with stack.client() as c:
        r = c.post("/api/projects/main/fleets", json={"configuration": fleet})
    assert r.status_code == 200, r.text
    nodes = [i["node"] for i in r.json()["instances"]]
    assert len(nodes) == 1
    for i in range(3):
        queue.submit(f"fleet-{i}", {**_hold("A100:4"), "fleets": ["one-a100"]})
    for i in range(2):
        assert queue.wait_status(f"fleet-{i}", "running")["jobs"][0]["node"] == nodes[0]
    # The other A100 node is idle, but not in the fleet.
    assert queue.wait_status("fleet-2", "pending")["reason"].startswith("waiting for capacity")
    queue.finish_all()
    with stack.client() as c:
        assert c.delete("/api/projects/main/fleets/one-a100").status_code == 204


def test_max_duration_stops_a_run_when_its_time_is_up(queue: Queue) -> None:
    queue.wait_idle(A10_NODES[:1])
    queue.submit("time-boxed", {**_hold("A10:1"), "max_duration": "2s"})
    queue.wait_status("time-boxed", "running")
    run = queue.wait_status("time-boxed", "terminated", timeout=20)
    assert run["reason"] == "max_duration exceeded (2s)"


def test_retry_requeues_a_failing_run_until_its_duration_is_spent(queue: Queue) -> None:
    queue.wait_idle(A10_NODES)
    failing = {"KWOK_RUN_FOR": "1s", "KWOK_EXIT_CODE": "3"}
    retry = {"on_events": ["error"], "duration": "6s"}
    queue.submit("flaky", {**_hold("A10:1"), "env": failing, "retry": retry})
    run = queue.wait_status("flaky", "failed", timeout=40)
    assert "exit code 3" in run["reason"]
    requeues = [e for e in queue.events("flaky") if e["message"].startswith("requeued")]
    assert requeues, queue.events("flaky")
    assert "retrying after error (exit code 3)" in requeues[0]["message"]


def test_an_interrupted_run_with_retry_gets_a_new_pod(
    queue: Queue, stack: Stack, kube_admin: kube.Kube
) -> None:
    queue.wait_idle(A10_NODES)
    queue.submit("evicted", {**_hold("A10:1"), "retry": {"on_events": ["interruption"]}})
    first = queue.wait_status("evicted", "running")["jobs"][0]["pod_name"]
    kube_admin.call(
        kube_admin.core.delete_namespaced_pod, first, stack.namespace, grace_period_seconds=0
    )
    wait_until(
        lambda: any(e["message"].startswith("requeued") for e in queue.events("evicted")),
        timeout=20,
        what="the run requeued",
    )
    queue.wait_status("evicted", "running", timeout=30)


def test_a_run_with_retry_on_no_capacity_gives_up_waiting_after_the_duration(
    queue: Queue,
) -> None:
    queue.wait_idle(A100_NODES)
    queue.submit("hog", _hold("A100:8"))
    queue.wait_status("hog", "running")
    queue.submit("hog-2", _hold("A100:8"))
    queue.wait_status("hog-2", "running")
    retry = {"on_events": ["no-capacity"], "duration": "2s"}
    queue.submit("impatient", {**_hold("A100:1"), "retry": retry})
    queue.wait_status("impatient", "pending")
    run = queue.wait_status("impatient", "failed", timeout=20)
    assert run["reason"] == "no capacity within the retry duration (2s)"
