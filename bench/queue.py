"""How fast the queue admits work: 10,000 pending one-GPU runs over the default pools.

Run by hand: ``.venv/bin/python -m bench.queue [--parts pure,store,live]``.

1. Pure: :func:`shared.queueing.plan` over the local cluster's default pools
   (4x8 H100, 2x8 A100, 2x1 A10: 50 GPUs) with 10,000 waiting runs, empty and
   full; CPU per run decided.
2. Store: the real scheduling pass (:func:`workers.scheduling.run_pass`) with
   its record cache, Lua commits and Celery sends, against a private
   ``redis-server`` the bench starts and stops by PID. 10,000 runs are
   submitted, then the bench alternates a pass with finishing every run the
   previous pass admitted, so GPUs free continuously, until the queue is empty.
   Admissions per second are counted over pass time only (finishing runs is
   the cluster's work, not the scheduler's). The drain runs twice: with Berth's
   settings (quick passes over the heads of the queues, a full pass every
   ``full_pass_every_s``; :mod:`shared.queueing.heads`), then with every pass a
   full one.
3. Live, when a local cluster runs at ``$BERTH_HOME/local`` (``berth local up``):
   the whole stack (API, two Celery workers, beat, proxy worker), 48 one-GPU
   A100 runs of 3 s over the 16 A100s, and a watch on the apiserver that pairs
   every pod that finishes with the next pod created on its node.

The anchor is Kueue's published baseline of about 43 admitted workloads per
second (kubernetes-sigs/kueue, "Performance" in its scalability docs).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml
from kubernetes import client, watch

from bench.common import private_redis
from cli.local import cluster
from cli.local import nodes as node_pools
from shared import kube
from shared.configuration.parse import parse_run_configuration
from shared.gpu.inventory import GpuInventory, build_inventory
from shared.placement.offers import Request
from shared.queueing import Holding, QueuedRun, plan
from shared.queueing.commit import Change, Writer
from shared.settings import RedisSettings, SchedulingSettings, Settings, load_settings
from shared.state.inventory_store import CHANNEL
from shared.state.jobs import jobs_for
from shared.state.records import Event, Run, RunStatus
from workers import scheduling
from workers.context import build_context

RUNS = 10_000
KUEUE_WORKLOADS_PER_S = 43.0
LIVE_RUNS = 48
LIVE_SECONDS = 3
REPEATS = 5

Row = tuple[str, str, str, str]  # what, p50 / value, p99, note


def main() -> None:
    parser = argparse.ArgumentParser(description="Berth's queue bench")
    parser.add_argument(
        "--parts", default="pure,store,live", help="comma-separated: pure, store, live"
    )
    parts = set(parser.parse_args().parts.split(","))
    inventory = pools_inventory()
    rows: list[Row] = []
    if "pure" in parts:
        rows += bench_pure(inventory)
    if "store" in parts:
        rows += bench_store(inventory)
    if "live" in parts:
        rows += bench_live()
    print_table(rows)


# --- 1. the pure core ------------------------------------------------------------------


def bench_pure(inventory: GpuInventory) -> list[Row]:
    gpus = sum(g.count for n in inventory.nodes for g in n.gpus)
    queued = [
        QueuedRun(
            run_id=f"r{i:05d}",
            project=("main", "other")[i % 2],
            priority=0,
            submitted_at=float(i),
            request=Request(gpu_count=1),
        )
        for i in range(RUNS)
    ]
    full = [
        Holding("main", h.placement)
        for h in _fill(inventory, queued)  # every GPU taken
    ]
    empty_s = [_cpu(lambda: plan(inventory, queued, [])) for _ in range(REPEATS)]
    full_s = [_cpu(lambda: plan(inventory, queued, full)) for _ in range(REPEATS)]
    freed = full[8:]  # eight GPUs just came free
    freed_s = [_cpu(lambda: plan(inventory, queued, freed)) for _ in range(REPEATS)]
    return [
        (
            f"plan(): {RUNS} queued, {gpus} GPUs free",
            _ms(statistics.median(empty_s)),
            "",
            f"admits {gpus}; {_us(statistics.median(empty_s) / RUNS)} CPU per run",
        ),
        (
            f"plan(): {RUNS} queued, cluster full",
            _ms(statistics.median(full_s)),
            "",
            f"{_us(statistics.median(full_s) / RUNS)} CPU per run",
        ),
        (
            f"plan(): {RUNS} queued, 8 GPUs just freed",
            _ms(statistics.median(freed_s)),
            "",
            f"{_us(statistics.median(freed_s) / RUNS)} CPU per run",
        ),
    ]


def _fill(inventory: GpuInventory, queued: list[QueuedRun]) -> list[Holding]:
    decided = plan(inventory, queued, [])
    return [Holding(a.project, p) for a in decided.admits for p in a.placements]


# --- 2. the real pass against Redis ------------------------------------------------------


def bench_store(inventory: GpuInventory) -> list[Row]:
    """The drain twice: as Berth runs it (quick passes over the heads of the queues, a
    full pass every ``full_pass_every_s``), then with every pass a full one."""
    rows: list[Row] = []
    for full_every_s, kind in ((None, "passes"), (1e-9, "full passes only")):
        with private_redis() as url, tempfile.TemporaryDirectory() as home:
            settings = _settings(Path(home), url, full_every_s)
            ctx = build_context(settings)
            try:
                rows += _bench_store(ctx, inventory, kind)
            finally:
                ctx.store.r.flushdb()
                ctx.close()
    return rows


def _bench_store(ctx: Any, inventory: GpuInventory, kind: str) -> list[Row]:
    store = ctx.store
    store.publish_inventory(ctx.clusters.key_for("main"), inventory.to_json(), CHANNEL)
    conf = parse_run_configuration("type: task\ncommands: [train]\nresources: {gpu: 1}\n")
    stored = conf.model_dump(mode="json")
    started = time.perf_counter()
    for i in range(RUNS):
        run = Run(
            id=secrets.token_hex(16),
            project=("main", "other")[i % 2],
            name=f"r{i:05d}",
            user="bench",
            configuration=stored,
            configuration_type="task",
        )
        jobs = jobs_for(run, conf)
        run.job_ids = [j.id for j in jobs]
        store.create_run(run, jobs, Event(at=run.submitted_at, kind="status", message="submitted"))
    submit_s = time.perf_counter() - started

    first_wall, first_cpu, first = _timed_pass(ctx)
    admitted = len(first.placed)
    waiting = RUNS - admitted
    running = set(first.placed)
    # (waiting before, wall, CPU, admitted, quick: decided only the heads)
    passes: list[tuple[int, float, float, int, bool]] = []
    while waiting > 0:
        _finish(ctx, running)
        wall, cpu, result = _timed_pass(ctx)
        passes.append((waiting, wall, cpu, len(result.placed), result.left_out > 0))
        admitted += len(result.placed)
        waiting -= len(result.placed)
        running = set(result.placed)
    walls = [p[1] for p in passes]
    cpus = [p[2] for p in passes]
    deep = [p for p in passes if p[0] >= RUNS * 9 // 10] or passes  # the queue still ~full
    deep_wall = [p[1] for p in deep]
    deep_cpu = [p[2] for p in deep]
    deep_admitted = sum(p[3] for p in deep)
    drained = admitted - len(first.placed)
    quick = sum(p[4] for p in deep)
    depth = f">= {RUNS * 9 // 10} waiting"
    rows: list[Row] = []
    if kind == "passes":
        rows += [
            (f"submit {RUNS} runs (store.create_run)", _s(submit_s), "", "once"),
            (
                f"first pass: {RUNS} submitted -> pending",
                _s(first_wall),
                "",
                f"{_s(first_cpu)} CPU (worker + Redis); writes every reason once",
            ),
        ]
    return [
        *rows,
        (
            f"{kind}, {depth}: wall",
            _ms(_p(deep_wall, 50)),
            _ms(_p(deep_wall, 99)),
            f"{len(deep)} passes ({quick} quick), {deep_admitted // max(len(deep), 1)} admitted"
            " each",
        ),
        (
            f"{kind}, {depth}: CPU (worker + Redis)",
            _ms(_p(deep_cpu, 50)),
            _ms(_p(deep_cpu, 99)),
            "what a pass costs a dedicated core at full queue depth",
        ),
        _rate_row(f"admissions/s, {kind}, {depth} (wall)", deep_admitted, deep_wall),
        _rate_row(f"admissions/s, {kind}, {depth} (CPU)", deep_admitted, deep_cpu),
        _rate_row(f"admissions/s, {kind}, whole drain of {RUNS} (wall)", drained, walls),
        _rate_row(f"admissions/s, {kind}, whole drain of {RUNS} (CPU)", drained, cpus),
        (
            f"scheduler CPU per waiting run, per pass ({kind})",
            _us(sum(deep_cpu) / max(sum(p[0] for p in deep), 1)),
            "",
            "at full depth"
            + (
                "; a quick pass decides each project's first head_runs only"
                if kind == "passes"
                else "; every waiting run decided (and its position kept) each pass"
            ),
        ),
    ]


def _rate_row(what: str, admitted: int, seconds: list[float]) -> Row:
    rate = admitted / sum(seconds) if seconds and sum(seconds) else 0.0
    return (what, f"{rate:.0f}/s", "", f"{rate / KUEUE_WORKLOADS_PER_S:.1f}x Kueue's ~43/s")


def _timed_pass(ctx: Any) -> tuple[float, float, scheduling.PassResult]:
    """Wall time, and CPU time of this process plus the Redis server's, of one pass."""
    redis_cpu = _redis_cpu(ctx.store.r)
    wall, cpu = time.perf_counter(), time.process_time()
    result = scheduling.run_pass(ctx)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu + _redis_cpu(ctx.store.r) - redis_cpu, result


def _redis_cpu(r: redis.Redis[bytes]) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _finish(ctx: Any, names: set[str]) -> None:
    """What sync_job does when pods succeed, for every run admitted last pass."""
    writer = Writer(ctx.store)
    for name in names:
        for project in ("main", "other"):
            run = _find(ctx, project, name)
            if run is None:
                continue
            jobs = [j.model_copy(update={"status": RunStatus.DONE}) for j in ctx.store.jobs_of(run)]
            writer.write(Change(run=run.model_copy(update={"status": RunStatus.DONE}), jobs=jobs))


def _find(ctx: Any, project: str, name: str) -> Run | None:
    run_id = ctx.store.r.get(ctx.store.key("runname", project, name))
    return ctx.store.find_run(run_id.decode()) if run_id else None


def _settings(home: Path, url: str, full_every_s: float | None = None) -> Settings:
    config = home / "server" / "config.yml"
    config.parent.mkdir(parents=True)
    backend = {"type": "kubernetes", "kubeconfig": {"filename": "/nonexistent/kubeconfig"}}
    config.write_text(
        yaml.safe_dump(
            {"projects": [{"name": p, "backends": [backend]} for p in ("main", "other")]}
        )
    )
    scheduling = SchedulingSettings()
    if full_every_s is not None:
        scheduling = SchedulingSettings(full_pass_every_s=full_every_s)
    return Settings(
        home=home, redis=RedisSettings(url=url, key_prefix="bench"), scheduling=scheduling
    )


# --- 3. live: freed GPU -> next pod created --------------------------------------------


def bench_live() -> list[Row]:
    settings = load_settings()
    state = cluster.read_state(settings.local_dir)
    running = cluster.status(settings.local_dir)
    if state is None or not running or not all(running.values()):
        return [
            ("live: freed GPU -> next pod", "skipped", "", f"no cluster at {settings.local_dir}")
        ]
    from tests.stack import start_stack  # the e2e stack helper: every Berth process by PID

    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
    namespace = f"bench-queue-{secrets.token_hex(3)}"
    k.call(k.core.create_namespace, {"metadata": {"name": namespace}})
    try:
        with tempfile.TemporaryDirectory() as directory:
            stack = start_stack(state, Path(directory), namespace=namespace, workers=2)
            try:
                return _bench_live(k, stack, namespace)
            finally:
                stack.stop()
    finally:
        k.call(k.core.delete_namespace, namespace)
        k.close()


def _bench_live(k: kube.Kube, stack: Any, namespace: str) -> list[Row]:
    seen = _PodTimes()
    stop = threading.Event()
    watcher = threading.Thread(target=seen.follow, args=(k, namespace, stop), daemon=True)
    watcher.start()
    body = {
        "type": "task",
        "commands": ["train"],
        "resources": {"gpu": "A100:1"},
        "env": {"KWOK_RUN_FOR": f"{LIVE_SECONDS}s"},
    }
    with stack.client() as c:
        for i in range(LIVE_RUNS):
            r = c.post("/api/projects/main/runs", json={"configuration": {**body, "name": f"l{i}"}})
            assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while seen.finished() < LIVE_RUNS and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    watcher.join(timeout=15)
    delays = seen.freed_to_created()
    if not delays:
        return [("live: freed GPU -> next pod", "no data", "", stack.logs()[-500:])]
    return [
        (
            "live: pod finished -> next pod created",
            _ms(_p(delays, 50)),
            _ms(_p(delays, 99)),
            f"{len(delays)} hand-overs, {LIVE_RUNS} runs of {LIVE_SECONDS}s on 16 A100s",
        )
    ]


class _PodTimes:
    """When each pod was first seen (created) and seen finished, and on which node."""

    def __init__(self) -> None:
        self.created: list[tuple[float, str]] = []
        self.done: list[tuple[float, str]] = []
        self._finished: set[str] = set()

    def follow(self, k: kube.Kube, namespace: str, stop: threading.Event) -> None:
        w = watch.Watch()
        seen: set[str] = set()
        while not stop.is_set():
            for event in w.stream(
                k.core.list_namespaced_pod, namespace, timeout_seconds=5, _request_timeout=10
            ):
                now = time.monotonic()
                pod: client.V1Pod = event["object"]
                name = pod.metadata.name
                if kube.LABEL_RUN not in (pod.metadata.labels or {}):
                    continue  # the jump host, not a run
                node = _target_node(pod)
                if name not in seen and event["type"] == "ADDED":
                    seen.add(name)
                    self.created.append((now, node))
                if pod.status and pod.status.phase == "Succeeded" and name not in self._finished:
                    self._finished.add(name)
                    self.done.append((now, node))
                if stop.is_set():
                    w.stop()
                    break

    def finished(self) -> int:
        return len(self._finished)

    def freed_to_created(self) -> list[float]:
        """For each finished pod, the wait until the next pod created on its node."""
        pending = sorted(self.created)
        delays = []
        for at, node in sorted(self.done):
            match = next((c for c in pending if c[1] == node and c[0] >= at), None)
            if match is not None:
                pending.remove(match)
                delays.append(match[0] - at)
        return delays


def _target_node(pod: client.V1Pod) -> str:
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    return str(terms.node_selector_terms[0].match_fields[0].values[0])


# --- the default pools as an inventory ---------------------------------------------------


def pools_inventory() -> GpuInventory:
    """The local cluster's default fake nodes, as the proxy worker would publish them."""
    api = client.ApiClient()
    nodes = []
    for body in node_pools.node_bodies(node_pools.load_pools()):
        body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        nodes.append(api.deserialize(json.dumps(body), "V1Node", "application/json"))
    api.close()
    return build_inventory(nodes, [])


# --- output ----------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header: Row = ("measurement", "p50 / value", "p99", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i in (0, 3) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _p(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    main()
