"""Every task type delivered twice, out of order, and late (after the run was stopped).

The plain functions the Celery tasks wrap are called in-process against the
real stack (its Redis and cluster), while the stack's own workers run too;
then the same messages go through the broker by name. A pod watch (the
ledger) sees every pod the apiserver ever had, so "nothing was created" is
checked against the apiserver, not against Berth's records.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared import kube, tasks
from shared.state.records import Event, Job, Placement, Run, RunStatus
from tests.polling import wait_until
from tests.reliability.world import World, orphans, submit_task
from workers import orphans as reaper
from workers import provisioning, scheduling, sweeps, teardown
from workers.scheduling_trigger import request_pass

pytestmark = pytest.mark.integration

S = RunStatus
# The state machine's order; the one step back it allows is provisioning -> pending.
_RANK = {S.SUBMITTED: 0, S.PENDING: 1, S.PROVISIONING: 2, S.RUNNING: 3, S.TERMINATING: 4}


def _deliveries(world: World, job: Job) -> list[tuple[str, Callable[[], object]]]:
    ctx = world.ctx

    def schedule() -> None:
        request_pass(ctx.store, lambda: scheduling.schedule_pass(ctx))

    return [
        (tasks.SCHEDULE_RUN, schedule),
        (tasks.PROVISION_JOB, lambda: provisioning.provision_job(ctx, job.id)),
        (tasks.SYNC_JOB, lambda: provisioning.sync_job(ctx, job.id)),
        (tasks.TEARDOWN_JOB, lambda: teardown.teardown_job(ctx, job.id)),
        (tasks.TEARDOWN_POD, lambda: teardown.teardown_pod(ctx, job.id)),
        (tasks.SWEEP, lambda: sweeps.sweep(ctx)),
        (tasks.REAP_ORPHANS, lambda: reaper.reap_orphans(ctx)),
    ]


def _status(world: World, run: Run, status: RunStatus) -> Callable[[], bool]:
    return lambda: world.ctx.store.get_run(run.id).status == status


def _assert_never_backwards(world: World, run: Run) -> None:
    """The run's and each job's recorded statuses only move forward."""
    by_job: dict[int | None, list[str]] = {}
    for _, event in world.ctx.store.events(run.id):
        if event.kind == "status" and event.status is not None:
            by_job.setdefault(event.job, []).append(event.status)
    for job, seen in by_job.items():
        for before, after in itertools.pairwise(seen):
            if S(before).is_finished:
                raise AssertionError(f"job {job}: {after} after final {before}: {seen}")
            if S(after).is_finished or (before, after) == (S.PROVISIONING, S.PENDING):
                continue
            assert _RANK[S(after)] >= _RANK[S(before)], f"job {job} went back: {seen}"


def test_duplicates_while_running_keep_one_pod_and_the_state(calm_world: World) -> None:
    world = calm_world
    run = submit_task(world, "dup-running")
    wait_until(_status(world, run, S.RUNNING), timeout=60, what="dup-running running")
    job = world.ctx.store.get_job(run.job_ids[0])
    first_pod = world.ledger.pods_of(job.id)
    assert len(first_pod) == 1

    deliveries = _deliveries(world, job)
    deliveries = [d for d in deliveries if d[0] not in (tasks.TEARDOWN_JOB, tasks.TEARDOWN_POD)]
    for _, deliver in [*reversed(deliveries), *deliveries]:
        deliver()

    assert world.ctx.store.get_run(run.id).status == S.RUNNING
    assert world.ledger.pods_of(job.id) == first_pod
    _assert_never_backwards(world, run)


def test_late_and_reordered_deliveries_after_a_stop_change_nothing_and_create_nothing(
    calm_world: World,
) -> None:
    world = calm_world
    run = submit_task(world, "dup-late")
    wait_until(_status(world, run, S.RUNNING), timeout=60, what="dup-late running")
    job = world.ctx.store.get_job(run.job_ids[0])
    with world.stack.client() as http:
        assert http.post("/api/projects/main/runs/dup-late/stop", json={}).status_code == 200
    wait_until(_status(world, run, S.TERMINATED), timeout=60, what="dup-late terminated")
    wait_until(lambda: not _pods(world, "dup-late"), timeout=60, what="dup-late's pod gone")
    pods_before = world.ledger.pods_of(job.id)
    stopped = world.ctx.store.get_run(run.id)

    deliveries = _deliveries(world, job) * 2
    random.Random(7).shuffle(deliveries)
    for _, deliver in deliveries:
        deliver()
    # The same, late, through the broker to the stack's own workers.
    sent = [_send(world, name, job, run) for name, _ in _deliveries(world, job) for _ in (1, 2)]
    wait_until(lambda: _all_succeeded(world, sent), timeout=60, what="late messages handled")

    after = world.ctx.store.get_run(run.id)
    assert (after.status, after.reason) == (stopped.status, stopped.reason)
    assert world.ctx.store.get_job(job.id).status == S.TERMINATED
    assert world.ledger.pods_of(job.id) == pods_before  # no pod was created after the stop
    assert not _pods(world, "dup-late")
    assert not [o for o in orphans(world) if "dup-late" in o]
    _assert_never_backwards(world, run)


def test_a_provision_that_arrives_after_the_stop_creates_nothing(calm_world: World) -> None:
    """A job placed, then stopped before its provision message ran; that message runs late."""
    world = calm_world
    store = world.ctx.store
    run = Run(
        id=uuid.uuid4().hex,
        project="main",
        name="dup-placed-stopped",
        user="admin",
        configuration={"type": "task", "name": "dup-placed-stopped", "commands": ["train"]},
        configuration_type="task",
        status=S.TERMINATING,
        stop_requested=True,
    )
    job = Job(
        id=uuid.uuid4().hex,
        run_id=run.id,
        project="main",
        run_name=run.name,
        status=S.PROVISIONING,
        placement=Placement(node="kwok-cpu-0", cpu_milli=100, memory_bytes=2**20),
    )
    run.job_ids = [job.id]
    submitted = Event(at=time.time(), kind="status", status="submitted", message="submitted")
    store.create_run(run, [job], submitted)

    ctx = world.ctx
    provisioning.provision_job(ctx, job.id)  # late: the run is stopping
    provisioning.sync_job(ctx, job.id)  # out of order: before any pod exists
    teardown.teardown_job(ctx, job.id)
    provisioning.provision_job(ctx, job.id)  # later still, after teardown
    provisioning.provision_job(ctx, job.id)

    assert store.get_job(job.id).status == S.TERMINATED
    assert store.get_run(run.id).status == S.TERMINATED
    assert world.ledger.pods_of(job.id) == set()
    assert not _pods(world, run.name)


def _pods(world: World, run_name: str) -> list[object]:
    k = world.kube
    return list(
        k.call(
            k.core.list_namespaced_pod,
            world.namespace,
            label_selector=f"{kube.LABEL_RUN}={run_name}",
        ).items
    )


def _send(world: World, name: str, job: Job, run: Run) -> str:
    args = {
        tasks.SCHEDULE_RUN: [run.id],
        tasks.SWEEP: [],
        tasks.REAP_ORPHANS: [],
    }.get(name, [job.id])
    result = world.ctx.celery.send_task(name, args=args, queue=tasks.QUEUE_OF[name])
    return str(result.id)


def _all_succeeded(world: World, task_ids: list[str]) -> bool:
    logs = "".join(Path(p.log).read_text(errors="replace") for p in world.workers())
    return all(f"[{task_id}] succeeded" in logs for task_id in task_ids)


def test_beats_reaper_passes_run_one_at_a_time(calm_world: World) -> None:
    """A pass that finds another running does nothing; once it ends, one reaps."""
    k, ns, store = calm_world.kube, calm_world.namespace, calm_world.ctx.store
    labels = kube.berth_labels("main", "gone", "gone")  # a project the reaper looks at
    name = f"berth-main-gone-{uuid.uuid4().hex[:6]}"
    k.call(k.core.create_namespaced_secret, ns, {"metadata": {"name": name, "labels": labels}})
    key = store.key(*reaper.REAPER)
    assert store.claim(key, "another-pass", ttl_s=60)
    try:
        assert reaper.reap_orphans_once(calm_world.ctx) is None
        assert name in [s.metadata.name for s in k.call(k.core.list_namespaced_secret, ns).items]
    finally:
        store.release(key, "another-pass")
    reaped = reaper.reap_orphans_once(calm_world.ctx)
    assert reaped is not None and any(name in r for r in reaped), reaped
    assert name not in [s.metadata.name for s in k.call(k.core.list_namespaced_secret, ns).items]
    assert not store.held(key)  # the pass let go of it


def test_teardown_deletes_the_recorded_objects_by_uid_and_never_a_later_holder_of_the_name(
    calm_world: World,
) -> None:
    """Teardown deletes what provisioning recorded, by name with the uid as precondition.
    Delivered again after the name went to another pod, it must leave that pod alone."""
    world = calm_world
    k, ns = world.kube, world.namespace
    run = submit_task(world, "td-uid")
    wait_until(_status(world, run, S.RUNNING), timeout=60, what="td-uid running")
    job = world.ctx.store.get_job(run.job_ids[0])
    pod = k.call(k.core.read_namespaced_pod, job.pod_name, ns)
    assert job.created_attempt == job.attempt == 1
    assert job.created[f"pod/{job.pod_name}"] == pod.metadata.uid
    for key, uid in job.created.items():
        kind, name = key.split("/", 1)
        read = {"pod": k.core.read_namespaced_pod, "secret": k.core.read_namespaced_secret}[kind]
        assert k.call(read, name, ns).metadata.uid == uid, key

    with world.stack.client() as http:
        assert http.post("/api/projects/main/runs/td-uid/stop", json={}).status_code == 200
    wait_until(_status(world, run, S.TERMINATED), timeout=60, what="td-uid terminated")
    wait_until(lambda: not _pods(world, "td-uid"), timeout=60, what="td-uid's pod gone")
    assert not any_objects_of(world, job.id)

    holder = {
        "metadata": {"name": job.pod_name, "labels": {"test": "later-holder"}},
        "spec": {"nodeName": "kwok-cpu-0", "containers": [{"name": "c", "image": "busybox"}]},
    }
    later = k.call(k.core.create_namespaced_pod, ns, holder)
    try:
        teardown.teardown_job(world.ctx, job.id)  # a late second delivery
        assert k.call(k.core.read_namespaced_pod, job.pod_name, ns).metadata.uid == (
            later.metadata.uid
        )
    finally:
        k.call(k.core.delete_namespaced_pod, job.pod_name, ns, grace_period_seconds=0)


def test_a_job_recorded_without_its_objects_is_torn_down_by_label(calm_world: World) -> None:
    """Records written before provisioning noted uids (or with one unknown) still stop clean."""
    world = calm_world
    run = submit_task(world, "td-label")
    wait_until(_status(world, run, S.RUNNING), timeout=60, what="td-label running")
    store = world.ctx.store
    for _ in range(10):
        job = store.get_job(run.job_ids[0])
        job.created, job.created_attempt = {}, 0
        if store.save_job(job, Event(at=time.time(), kind="info", message="as recorded before")):
            break
    assert store.get_job(job.id).created_attempt == 0

    with world.stack.client() as http:
        assert http.post("/api/projects/main/runs/td-label/stop", json={}).status_code == 200
    wait_until(_status(world, run, S.TERMINATED), timeout=60, what="td-label terminated")
    wait_until(lambda: not any_objects_of(world, job.id), timeout=60, what="td-label's objects")


def any_objects_of(world: World, job_id: str) -> bool:
    k, selector = world.kube, f"{kube.LABEL_JOB}={job_id}"
    return any(
        k.call(lister, world.namespace, label_selector=selector).items
        for lister in (k.core.list_namespaced_pod, k.core.list_namespaced_secret)
    )
