"""A Berth installation of its own for one fault test, and the measures taken on it.

A fault test kills processes, so it never touches the session's cluster or
stack: :func:`open_world` starts a fresh local control plane and Redis
(``cli.local.cluster.up``) and a whole Berth stack on it, plus

- a :class:`PodLedger`, a pod watch of the apiserver itself (not Berth's
  records) that remembers every pod UID each job ever had, so a job started
  twice is caught even if the second pod was later deleted;
- a :class:`Burst` that submits runs from client threads and keeps exactly the
  ones the API answered 202 for;
- :func:`judge`, which turns the end state into the figures the README shows:
  runs lost, runs unsettled, runs failed, jobs started twice, orphans.

``bench.faults`` uses the same pieces at full size.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import watch

from cli.local import cluster
from cli.local import nodes as node_pools
from cli.local.processes import ProcessRecord, is_running, start_process
from shared import kube
from shared.errors import BerthError, KubeNotFound, NotFoundError
from shared.state.records import Run, RunStatus
from tests.polling import wait_until
from tests.sentinel import SentinelGroup, start_sentinel_group
from tests.stack import Stack, start_stack
from workers.context import WorkerContext, build_context

NAMESPACE = "rel"
SETTLED = frozenset({RunStatus.RUNNING, RunStatus.DONE, RunStatus.FAILED, RunStatus.TERMINATED})
_ACTIVE_PHASES = frozenset({"Pending", "Running", None})  # a pod in these still holds its GPUs
LINGER_S = 45.0  # beat reaps every 30 s; teardown of a finished job takes well under that


@dataclass
class World:
    directory: Path
    cluster: cluster.ClusterState
    stack: Stack
    kube: kube.Kube
    ctx: WorkerContext
    """In-process worker context on the stack's Redis and cluster (sweeps, checks)."""
    ledger: PodLedger
    namespace: str = NAMESPACE

    @property
    def cluster_dir(self) -> Path:
        return Path(self.cluster.directory)

    def workers(self) -> list[ProcessRecord]:
        return [p for p in self.stack.processes if p.name.startswith("worker")]

    def process(self, name: str) -> ProcessRecord:
        return next(p for p in self.stack.processes if p.name == name)

    def restart_cluster_process(self, name: str) -> ProcessRecord:
        """Start a control-plane process (redis, kube-apiserver) again with its argv.

        The new PID goes into ``state.json`` too, so ``cluster.down`` stops it.
        """
        old = self.cluster.processes[name]
        record = start_process(name, old.argv, log_dir=Path(old.log).parent)
        self.cluster.processes[name] = record
        state_file = self.cluster_dir / "state.json"
        state_file.write_text(self.cluster.model_dump_json(indent=2))
        return record

    def close(self) -> None:
        self.ledger.stop()
        self.ctx.close()
        self.stack.stop()
        self.kube.close()
        cluster.down(self.cluster_dir)


def open_world(
    directory: Path,
    *,
    workers: int = 2,
    pools_file: Path | None = None,
    timeout_s: float = 180,
    env: dict[str, str] | None = None,
    apis: int = 1,
    hosts: tuple[str, ...] = (),
    proxy_workers: int = 1,
) -> World:
    """A fresh local cluster and a whole Berth stack on it; close it with ``World.close``.

    ``env`` goes to every Berth process (e.g. a Sentinel group's settings);
    ``apis``, ``hosts`` and ``proxy_workers`` are ``start_stack``'s replicas."""
    cluster_dir = directory / "cluster"
    state, _ = cluster.up(
        cluster_dir, pools_file=pools_file or node_pools.DEFAULT_POOLS_FILE, timeout_s=timeout_s
    )
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
    try:
        k.call(k.core.create_namespace, {"metadata": {"name": NAMESPACE}})
        # The ServiceAccount admission plugin refuses pods until the controller made this.
        wait_until(lambda: _has_default_sa(k), timeout=60, what="the namespace's default SA")
        stack = start_stack(
            state,
            directory / "stack",
            namespace=NAMESPACE,
            workers=workers,
            env=env,
            apis=apis,
            hosts=hosts,
            proxy_workers=proxy_workers,
        )
    except BaseException:
        k.close()
        cluster.down(cluster_dir)
        raise
    ledger = PodLedger(k, NAMESPACE)
    ledger.start()
    return World(
        directory=directory,
        cluster=state,
        stack=stack,
        kube=k,
        ctx=build_context(stack.settings()),
        ledger=ledger,
    )


def open_sentinel_world(
    directory: Path, *, min_replica_acks: int = 1, **kwargs: Any
) -> tuple[World, SentinelGroup]:
    """:func:`open_world` with Berth's store and broker on a Sentinel group of its own
    (3 redis-server, 3 Sentinels: ``tests/sentinel.py``); close the world, then the group."""
    group = start_sentinel_group(directory / "sentinel")
    try:
        world = open_world(directory, env=group.env(min_replica_acks=min_replica_acks), **kwargs)
    except BaseException:
        group.stop()
        raise
    return world, group


def sigkill(record: ProcessRecord) -> None:
    """SIGKILL a process we started and reap it, so no zombie is left behind."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    wait_until(lambda: not is_running(record), timeout=10, what=f"{record.name} killed")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)


def sigkill_group(record: ProcessRecord) -> None:
    """SIGKILL a process we started and everything in its process group (its children:
    ``start_process`` makes each one a session and group leader), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)
    sigkill(record)


def worker_ready_count(record: ProcessRecord) -> int:
    """How many times the worker logging to ``record.log`` said it was ready."""
    return Path(record.log).read_text(errors="replace").count("ready.")


# -- what the apiserver saw ---------------------------------------------------------


class PodLedger:
    """Every pod UID each Berth job ever had, from a list+watch of the namespace.

    The watch resumes from the last resourceVersion after an error (the
    apiserver may be down on purpose) and relists on 410 Gone.
    """

    def __init__(self, k: kube.Kube, namespace: str) -> None:
        self._k = k
        self._namespace = namespace
        self._lock = threading.Lock()
        self._uids: dict[str, set[str]] = {}
        self._first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._loop, name="pod-ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=15)

    def pods_of(self, job_id: str) -> set[str]:
        with self._lock:
            return set(self._uids.get(job_id, ()))

    def jobs_started_twice(self) -> dict[str, set[str]]:
        with self._lock:
            return {job: set(uids) for job, uids in self._uids.items() if len(uids) > 1}

    def first_pod_after(self, t: float) -> float | None:
        """When the first pod was seen that appeared after ``t`` (epoch seconds)."""
        with self._lock:
            later = [seen for seen in self._first_seen.values() if seen > t]
        return min(later, default=None)

    def _record(self, pod: Any) -> None:
        job = (pod.metadata.labels or {}).get(kube.LABEL_JOB)
        if job is None:
            return
        with self._lock:
            self._uids.setdefault(job, set()).add(pod.metadata.uid)
            self._first_seen.setdefault(pod.metadata.uid, time.time())

    def _loop(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self._k.call(
                        self._k.core.list_namespaced_pod,
                        self._namespace,
                        label_selector=kube.LABEL_JOB,
                    )
                    for pod in listed.items:
                        self._record(pod)
                    version = listed.metadata.resource_version
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self._k.core.list_namespaced_pod,
                    self._namespace,
                    label_selector=kube.LABEL_JOB,
                    resource_version=version,
                    timeout_seconds=60,
                    _request_timeout=(5, 75),
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version or version
                    self._record(pod)
            except Exception as e:  # apiserver away, 410 Gone, a cut stream: list or resume
                if getattr(e, "status", None) == 410:
                    version = None
                self._stop.wait(0.5)


# -- submitting -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    name: str
    long: bool
    """A long run keeps running until stopped; the others finish after ``short_s``."""
    short_s: int = 2

    def configuration(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "type": "task",
            "name": self.name,
            "commands": ["python train.py"],
            "resources": {"gpu": 1},
        }
        if not self.long:
            conf["env"] = {"KWOK_RUN_FOR": f"{self.short_s}s"}
        return conf


def burst_specs(n: int, *, prefix: str, long_every: int = 3) -> list[RunSpec]:
    return [RunSpec(name=f"{prefix}-{i}", long=i % long_every == 0) for i in range(n)]


RETRIES_ON_503 = 100  # 5 s of 503s: longer than any Redis restart here


@dataclass
class Burst:
    """Submit runs from client threads; keep what the API accepted (202) and what not."""

    stack: Stack
    specs: list[RunSpec]
    threads: int = 8
    retries_on_503: int = RETRIES_ON_503
    hold_after: int | None = None
    """If set, submissions past this many wait for :meth:`release` (a fault lands
    while the clients are known to be between requests, not after the burst ended)."""
    accepted: dict[str, str] = field(default_factory=dict)
    """Run name -> run id, for every 202."""
    answers: Counter[str] = field(default_factory=Counter)
    """Status codes (and ``connection``) of every answer."""
    server_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _sent: int = 0
    _released: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Burst:
        self._thread = threading.Thread(target=self.run, name="burst", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Let the submissions held by ``hold_after`` go."""
        self._released.set()

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the burst did not finish in time"

    def run(self) -> None:
        start = time.perf_counter()
        with (
            httpx.Client(
                base_url=self.stack.url,
                headers={"Authorization": f"Bearer {self.stack.admin_token}"},
                timeout=30,
            ) as http,
            ThreadPoolExecutor(self.threads) as pool,
        ):
            list(pool.map(lambda spec: self._submit(http, spec), self.specs))
        self.seconds = time.perf_counter() - start

    @property
    def done(self) -> int:
        with self._lock:
            return sum(self.answers.values())

    def _submit(self, http: httpx.Client, spec: RunSpec) -> None:
        with self._lock:
            held = self.hold_after is not None and self._sent >= self.hold_after
            self._sent += 1
        if held:
            # Bounded: a test that never releases still ends (its kill failed first).
            self._released.wait(timeout=300)
        # A client that honours 503 ("retry later") tries again, a bounded number of times.
        for _ in range(self.retries_on_503):
            try:
                r = http.post(
                    "/api/projects/main/runs", json={"configuration": spec.configuration()}
                )
            except httpx.HTTPError:
                with self._lock:
                    self.answers["connection"] += 1
                return
            if r.status_code != 503:
                break
            with self._lock:
                self.answers["503"] += 1
            time.sleep(0.05)
        with self._lock:
            self.answers[str(r.status_code)] += 1
            if r.status_code == 202:
                self.accepted[spec.name] = r.json()["id"]
            elif r.status_code >= 500 and r.status_code != 503:
                self.server_errors.append(f"{spec.name}: {r.status_code} {r.text[:300]}")


def submit_task(world: World, name: str) -> Run:
    """A one-GPU task named ``name``, through the API as a user sends it; its record."""
    conf = {"type": "task", "name": name, "commands": ["train"], "resources": {"gpu": 1}}
    with world.stack.client() as http:
        r = http.post("/api/projects/main/runs", json={"configuration": conf})
    assert r.status_code == 202, r.text
    return world.ctx.store.get_run(r.json()["id"])


def stop_runs(stack: Stack, names: Iterable[str], *, timeout: float = 60) -> None:
    """Stop each run through the API, retrying while the API answers 503."""
    with stack.client() as http:
        for name in names:

            def stopped(name: str = name) -> bool:
                try:
                    r = http.post(f"/api/projects/main/runs/{name}/stop", json={})
                except httpx.HTTPError:
                    return False
                assert r.status_code in (200, 503), r.text
                return r.status_code == 200

            wait_until(stopped, timeout=timeout, what=f"stop {name} accepted")


# -- the verdict ----------------------------------------------------------------------


@dataclass
class Verdict:
    accepted: int
    lost: list[str]
    """Accepted (202) runs with no record, or a record of another run."""
    unsettled: dict[str, str]
    """Accepted runs neither running nor finished: name -> status."""
    failed: dict[str, str]
    """name -> reason, for runs that failed."""
    started_twice: dict[str, set[str]]
    """job id -> the pod UIDs it ever had, for jobs that had more than one."""
    two_pods_now: dict[str, int]
    orphans_left: list[str]
    """Objects without a live run before the sweep (what the faults left behind)."""
    orphans_after_sweep: list[str]
    """Objects the faults had orphaned that one sweep did not delete.

    Only what was orphaned before the sweep counts: a short job may finish while
    the sweep runs, and its secret is then teardown's (or the next sweep's) to
    delete, which ``orphans_lingering`` checks.
    """
    orphans_lingering: list[str]
    """Objects still orphaned after the live workers and beat had time to clean up."""

    def problems(self) -> list[str]:
        out = []
        for what, value in (
            ("lost", self.lost),
            ("unsettled", self.unsettled),
            ("failed", self.failed),
            ("started twice", self.started_twice),
            ("two pods now", self.two_pods_now),
            ("orphans after one sweep", self.orphans_after_sweep),
            ("orphans lingering", self.orphans_lingering),
        ):
            if value:
                out.append(f"{what}: {value}")
        return out


def wait_settled(world: World, accepted: dict[str, str], *, timeout: float) -> None:
    """Every accepted run running or finished (read from the store, as workers write it)."""

    def unsettled() -> dict[str, str]:
        return {
            name: str(status)
            for name, status in statuses(world, accepted).items()
            if status not in SETTLED
        }

    try:
        wait_until(lambda: not unsettled(), timeout=timeout, what="every accepted run settled")
    except AssertionError as e:
        raise AssertionError(f"{e}\nunsettled: {unsettled()}\n{world.stack.logs()}") from None


def recorded_runs(world: World, prefix: str) -> dict[str, str]:
    """Name -> id of every run of project ``main`` named ``prefix...`` that Berth
    recorded, answered or not (an API process killed mid-request may have kept one)."""
    runs = world.ctx.store.older_runs("main", before=float("inf"), count=100_000)
    return {r.name: r.id for r in runs if r.name.startswith(prefix)}


def statuses(world: World, accepted: dict[str, str]) -> dict[str, RunStatus | None]:
    runs = {r.id: r for r in world.ctx.store.find_runs(list(accepted.values()))}
    return {name: (runs[i].status if i in runs else None) for name, i in accepted.items()}


def judge(world: World, accepted: dict[str, str]) -> Verdict:
    """The end state, then one sweep (beat's sweep and the orphan reaper), then orphans."""
    store = world.ctx.store
    runs = {r.id: r for r in store.find_runs(list(accepted.values()))}
    lost = [name for name, run_id in accepted.items() if run_id not in runs]
    lost += [n for n, i in accepted.items() if i in runs and runs[i].name != n]
    unsettled = {
        n: str(runs[i].status)
        for n, i in accepted.items()
        if i in runs and runs[i].status not in SETTLED
    }
    failed = {
        n: runs[i].reason
        for n, i in accepted.items()
        if i in runs and runs[i].status == RunStatus.FAILED
    }
    pods = world.kube.call(
        world.kube.core.list_namespaced_pod, world.namespace, label_selector=kube.LABEL_JOB
    ).items
    per_job = Counter(p.metadata.labels[kube.LABEL_JOB] for p in pods)
    left = orphans(world)
    sweep_once(world)
    after = orphans(world)
    return Verdict(
        accepted=len(accepted),
        lost=lost,
        unsettled=unsettled,
        failed=failed,
        started_twice=world.ledger.jobs_started_twice(),
        two_pods_now={job: n for job, n in per_job.items() if n > 1},
        orphans_left=left,
        orphans_after_sweep=sorted(set(after) & set(left)),
        orphans_lingering=_lingering(world, after),
    )


def _lingering(world: World, after: list[str]) -> list[str]:
    """Orphans left once teardown and beat's reaper (every 30 s) have had their turn."""
    if not after:
        return []
    deadline = time.monotonic() + LINGER_S
    while (now := orphans(world)) and time.monotonic() < deadline:
        time.sleep(1.0)
    return now


def sweep_once(world: World) -> None:
    """One of beat's sweeps and one orphan reap, in-process, as beat would send them."""
    from workers import orphans as reaper
    from workers import sweeps

    sweeps.sweep(world.ctx)
    reaper.reap_orphans(world.ctx)


def orphans(world: World) -> list[str]:
    """Berth objects in the namespace that no live run explains.

    Written from the promise, not from the reaper's code: a pod still holding
    its node (Pending or Running, not being deleted) needs an unfinished job; a
    secret needs an unfinished job; a run's service needs an unfinished run of
    that name. A finished job keeps its ended pod, which ``berth logs`` reads.
    """
    k = world.kube
    store = world.ctx.store
    selector = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{kube.LABEL_RUN}"
    out = []
    for kind, lister in (
        ("pod", k.core.list_namespaced_pod),
        ("secret", k.core.list_namespaced_secret),
        ("service", k.core.list_namespaced_service),
    ):
        for obj in k.call(lister, world.namespace, label_selector=selector).items:
            meta = obj.metadata
            if meta.deletion_timestamp is not None:
                continue  # on its way out
            labels = meta.labels or {}
            job_id = labels.get(kube.LABEL_JOB)
            if job_id is not None:
                job = store.find_job(job_id)
                live = job is not None and not job.status.is_finished
                if kind == "pod" and job is not None and obj.status.phase not in _ACTIVE_PHASES:
                    live = True  # an ended pod of a known job: kept for its logs
            else:
                try:
                    run = store.run_by_name(labels[kube.LABEL_PROJECT], labels[kube.LABEL_RUN])
                    live = not run.status.is_finished
                except NotFoundError:
                    live = False
            if not live:
                out.append(f"{kind}/{meta.name}")
    return sorted(out)


def pick(rng: random.Random, records: list[ProcessRecord]) -> ProcessRecord:
    return records[rng.randrange(len(records))]


def _has_default_sa(k: kube.Kube) -> bool:
    try:
        k.call(k.core.read_namespaced_service_account, "default", NAMESPACE)
    except KubeNotFound:
        return False
    except BerthError:
        return False
    return True
