"""Scenario 12: the per-unit costs, measured, and what they project at 10,000 nodes.

Run with ``python -m bench --only projection`` (or ``python -m bench.projection``).
Issue 17 asks what a scheduling pass costs at 10,000 nodes and 100,000 waiting
runs, what one scheduler process admits per second there, and what must change
first. Each per-unit cost is measured here at several sizes and a straight line
is fitted through the points; the projection reads the lines at the target.

1. **Per waiting run per pass.** :func:`shared.queueing.plan` over 1,000 to
   100,000 waiting one-GPU runs on scenario 6's synthetic fleet at 10,000 nodes,
   full of Berth's jobs (one holding per GPU) but for 8 GPUs; then the real pass
   (:func:`workers.scheduling.run_pass`: record cache, Lua commits, Celery sends)
   against a private ``redis-server``, the published inventory full but for 8
   GPUs. The slope over depth is the cost per waiting run.
2. **Per admission, by nodes.** ``plan()`` at 100 to 10,000 nodes: a pass over 40
   waiting runs that admits 20, minus one that admits none, per run; and in the
   real pass, passes admitting 64 against passes admitting 8.
3. **Per pod event and per inventory version.** The watch thread's decoding and
   the builder's update per event; per new version at N nodes, the proxy
   worker's snapshot, JSON and Redis write, and each pass's fetch, parse and
   first match.
4. **One simulated run, as large as this machine allows.** A local cluster
   (:func:`cli.local.cluster.up`) with KWOK nodes of the same fleet, created 16 at
   a time; a pod on every node holding all its GPUs but on 8 nodes; the real
   :class:`InventoryWatcher` listing them and publishing to Redis; the waiting
   runs in Redis and real passes over that inventory; then foreign pods created
   and deleted by a child process (its threads would share the watcher's
   interpreter lock) while the watcher's threads' CPU is read from /proc.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
import urllib3
import yaml
from kubernetes import client, watch

from bench import burst, placement
from bench.common import ensure_namespace, machine, private_redis
from cli.local import cluster
from cli.local.nodes import GpuSpec, NodePool, NodePools, node_bodies
from shared import kube
from shared.configuration.parse import parse_run_configuration
from shared.gpu.inventory import GpuInventory, InventoryBuilder, NodeInventory
from shared.placement.offers import Request, clear_fit_cache, match
from shared.queueing import Holding, QueuedRun, plan
from shared.queueing.commit import Change, Writer
from shared.settings import RedisSettings, Settings
from shared.state.inventory_store import CHANNEL
from shared.state.jobs import jobs_for
from shared.state.records import Event, Placement, Run, RunStatus
from workers import scheduling
from workers.context import WorkerContext, build_context
from workers.inventory_watch import InventoryWatcher

SCENARIO = "12 projection"
TITLE = "Projection to 10,000 nodes and 100,000 waiting runs (scenario projection, issue 17)"
TARGET_NODES = 10_000
TARGET_WAITING = 100_000
FREED = 8  # GPUs free at each pass at depth: a few jobs just ended
DECIDED = 20  # admissions in the pass that measures the cost per admission
PUBLISH_SPACING_S = 0.05  # WatchSettings.min_publish_interval_s: snapshots at most 20/s
JOB_MINUTES = (1, 5, 30)  # one-GPU job lengths the demand rows are worked out for
REPEATS = 3  # timed repeats of each pure measurement; the median is kept
STORE_PASSES = 4  # timed passes at each queue depth in Redis
LOAD_THREADS = 16  # pod creates in flight while loading the KWOK cluster
SETTLE_S = 5.0  # no watch event for this long: the churn's events have all come
GIB = 2**30
GPU = "nvidia.com/gpu"
RUN_REQUEST = Request(gpu_count=1, cpu_millicores=1000, memory_bytes=GIB)
"""What every waiting run asks: one GPU of any model, one CPU, 1 GiB (the widest fit)."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    waiting: tuple[int, ...] = (1_000, 10_000, 30_000, 100_000)
    """Waiting runs in the pure ``plan()`` measurement."""
    store_waiting: tuple[int, ...] = (1_000, 10_000, 30_000)
    """Waiting runs in Redis for the real pass's slope."""
    nodes: tuple[int, ...] = (100, 1_000, 5_000, 10_000)
    kwok_nodes: int = 10_000
    kwok_waiting: int = 100_000
    churn_pods: int = 2_000
    """Foreign pods created and deleted on the KWOK cluster while the watcher runs."""


FULL = Sizes()
QUICK = Sizes(
    waiting=(200, 1_000, 3_000),
    store_waiting=(200, 1_000),
    nodes=(100, 300, 1_000),
    kwok_nodes=200,
    kwok_waiting=2_000,
    churn_pods=200,
)


@dataclass
class Measured:
    """Every measured figure, in seconds (CPU unless named wall) or counts."""

    plan_by_waiting: list[tuple[int, float]] = field(default_factory=list)
    admission_by_nodes: list[tuple[int, float]] = field(default_factory=list)
    pass_fixed_by_nodes: list[tuple[int, float]] = field(default_factory=list)
    holding_by_nodes: list[tuple[int, float]] = field(default_factory=list)
    """(Berth jobs running, plan() CPU per running job per pass) at each fleet size."""
    store_by_waiting: list[tuple[int, float]] = field(default_factory=list)
    store_wall_by_waiting: list[tuple[int, float]] = field(default_factory=list)
    store_per_admission: float = math.nan
    submit_per_run: float = math.nan
    per_version: dict[int, dict[str, float]] = field(default_factory=dict)
    per_event: dict[str, float] = field(default_factory=dict)
    gpus_at: dict[int, int] = field(default_factory=dict)
    kwok: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run(tmp: Path, *, sizes: Sizes, command: str, say: Say) -> list[str]:
    """Measure everything, then return the RESULTS.md section's lines."""
    started, load_start = time.time(), _load()
    m = Measured()
    fleets = {n: _fleet(n) for n in sorted({*sizes.nodes, max(sizes.nodes)})}
    big = max(sizes.nodes)
    inventories = {n: _inventory(nodes, pods) for n, (nodes, pods) in fleets.items()}
    m.gpus_at = {n: _gpus(inv) for n, inv in inventories.items()}
    say(f"projection: plan() per waiting run, {big:,} nodes, {sizes.waiting} waiting")
    m.plan_by_waiting = [(w, _plan_cpu(inventories[big], w, FREED)) for w in sizes.waiting]
    say(f"projection: plan() per admission at {sizes.nodes} nodes")
    for n, inventory in inventories.items():
        fixed = _plan_cpu(inventory, 2 * DECIDED, 0)
        admitting = _plan_cpu(inventory, 2 * DECIDED, DECIDED)
        m.pass_fixed_by_nodes.append((n, fixed))
        m.admission_by_nodes.append((n, (admitting - fixed) / DECIDED))
        holdings = len(_holdings(inventory, leave=0))
        foreign = _plan_cpu(inventory, 2 * DECIDED, 0, foreign=True)
        m.holding_by_nodes.append((holdings, (fixed - foreign) / max(holdings, 1)))
    say("projection: pod events and inventory versions")
    with private_redis() as url:
        for n, (nodes, pods) in fleets.items():
            m.per_version[n] = _version_costs(nodes, pods, url)
        m.per_event = _event_costs(fleets[big][1])
        del fleets
        gc.collect()
        say(f"projection: the real pass in Redis, {sizes.store_waiting} waiting")
        _store_passes(m, inventories[big], sizes.store_waiting, url, Path(tmp))
    say(f"projection: KWOK, {sizes.kwok_nodes:,} nodes, {sizes.kwok_waiting:,} waiting runs")
    try:
        _simulated(m, Path(tmp), sizes, say)
    except Exception as e:  # the measured units above still make a projection
        traceback.print_exc()
        m.notes.append(f"the simulated run failed: {type(e).__name__}: {str(e)[:300]}")
    minutes = (time.time() - started) / 60
    return section(m, sizes, command=command, minutes=minutes, load=(load_start, _load()))


# --- 1 and 2: the pure core ----------------------------------------------------------------


def _plan_cpu(inventory: GpuInventory, waiting: int, free: int, *, foreign: bool = False) -> float:
    """Median CPU seconds of ``plan()`` over ``waiting`` one-GPU runs, the cluster full of
    Berth's jobs (``foreign``: of pods Berth did not create) but ``free`` GPUs; the
    collector is off, as in a real pass."""
    holdings = [] if foreign else _holdings(inventory, leave=free)
    if foreign:
        inventory = _nearly_full(inventory, free)
    queued = [
        QueuedRun(
            run_id=f"r{i:06d}",
            project=("main", "other")[i % 2],
            priority=0,
            submitted_at=float(i),
            request=RUN_REQUEST,
        )
        for i in range(waiting)
    ]
    samples = []
    for _ in range(REPEATS):
        gc.collect()
        gc.disable()
        try:
            start = time.thread_time()
            plan(inventory, queued, holdings)
            samples.append(time.thread_time() - start)
        finally:
            gc.enable()
    return statistics.median(samples)


def _holdings(inventory: GpuInventory, *, leave: int) -> list[Holding]:
    """One one-GPU job of Berth's on every free GPU, but one GPU left on each of the first
    ``leave`` GPU nodes (the few that just came free)."""
    holdings: list[Holding] = []
    for i, node in enumerate(n for n in inventory.nodes if n.gpus):
        group = node.gpus[0]
        free = node.free.gpus.get(group.resource, 0)
        job = Placement(
            node=node.name,
            gpu_resource=group.resource,
            gpus=1,
            cpu_milli=RUN_REQUEST.cpu_millicores,
            memory_bytes=RUN_REQUEST.memory_bytes,
        )
        taken = free - 1 if i < leave and free > 0 else free
        holdings += [Holding(("main", "other")[i % 2], job)] * taken
    return holdings


# --- 3: pod events and inventory versions ----------------------------------------------


def _version_costs(nodes: list[Any], pods: list[Any], url: str) -> dict[str, float]:
    """What one new inventory version costs the proxy worker and then each pass."""
    builder = InventoryBuilder()
    builder.reset(nodes, pods)
    builder.snapshot()
    pod = pods[len(pods) // 2]
    snapshot_s, costs = [], {}
    for i in range(REPEATS * 3):
        moved = _with_cpu(pod, f"{1 + i % 2}")
        builder.upsert_pod(moved)
        start = time.thread_time()
        inventory = builder.snapshot()
        snapshot_s.append(time.thread_time() - start)
    costs["snapshot"] = statistics.median(snapshot_s)
    costs["to_json"] = _median_cpu(inventory.to_json)
    text = inventory.to_json()
    costs["kib"] = len(text) / 1024
    publisher = redis.Redis.from_url(url, socket_timeout=30)
    key = f"projection-inventory-{len(nodes)}"
    try:
        costs["publish"] = _median_wall(lambda: publisher.set(key, text))
        costs["fetch"] = _median_wall(lambda: publisher.get(key))
    finally:
        publisher.delete(key)
        publisher.close()
    costs["from_json"] = _median_cpu(lambda: GpuInventory.from_json(text))
    parsed = GpuInventory.from_json(text)

    def cold() -> None:
        clear_fit_cache()
        match(parsed, RUN_REQUEST)

    costs["cold_match"] = _median_cpu(cold)
    return costs


def _event_costs(pods: list[Any]) -> dict[str, float]:
    """Per watch event: the watch thread's deserialization, the consumer's builder update."""
    api = client.ApiClient()
    line = json.dumps({"type": "MODIFIED", "object": api.sanitize_for_serialization(pods[0])})
    w = watch.Watch()
    deserialize = _median_cpu(lambda: w.unmarshal_event(line, "V1Pod"), calls=2_000)
    builder = InventoryBuilder()
    builder.reset([], pods)
    flip = [_with_cpu(pods[0], "1"), _with_cpu(pods[0], "2")]
    state = {"i": 0}

    def upsert() -> None:
        state["i"] += 1
        builder.upsert_pod(flip[state["i"] % 2])

    api.close()
    return {"deserialize": deserialize, "upsert": _median_cpu(upsert, calls=2_000)}


def _with_cpu(pod: Any, cpu: str) -> Any:
    """A copy of ``pod`` whose container requests ``cpu``: a pod event that changes a sum."""
    api = client.ApiClient()
    body = api.sanitize_for_serialization(pod)
    container = body["spec"]["containers"][0]
    container["resources"]["requests"]["cpu"] = cpu
    container["resources"]["limits"]["cpu"] = cpu
    changed = _deserialize(api, body, "V1Pod")
    api.close()
    return changed


# --- 1 again: the real pass against Redis ------------------------------------------------


def _store_passes(
    m: Measured, inventory: GpuInventory, depths: tuple[int, ...], url: str, tmp: Path
) -> None:
    """Pass CPU (worker + Redis) at each queue depth, the inventory full but FREED GPUs;
    then, at the largest depth, passes that admit 8x more, for the cost per admission."""
    kubeconfig = Path("/nonexistent/kubeconfig")  # no cluster: the pass reads only Redis
    with _context(url, tmp / "store-home", kubeconfig) as ctx:
        key = ctx.clusters.key_for("main")
        ctx.store.publish_inventory(key, _nearly_full(inventory, FREED).to_json(), CHANNEL)
        submitted = 0
        for depth in depths:
            start = time.perf_counter()
            _submit(ctx, depth - submitted, first=submitted)
            m.submit_per_run = (time.perf_counter() - start) / max(depth - submitted, 1)
            submitted = depth
            _, _, first = _timed_pass(ctx)  # submitted -> pending: every reason written once
            _finish(ctx, first.placed)
            cpu, wall = _passes_at_depth(ctx, STORE_PASSES)
            m.store_by_waiting.append((depth, cpu))
            m.store_wall_by_waiting.append((depth, wall))
        more = FREED * 8
        ctx.store.publish_inventory(key, _nearly_full(inventory, more).to_json(), CHANNEL)
        _passes_at_depth(ctx, 1, admitted=more)  # the new version's read: not timed
        cpu, _ = _passes_at_depth(ctx, STORE_PASSES, admitted=more)
        m.store_per_admission = (cpu - m.store_by_waiting[-1][1]) / (more - FREED)


def _passes_at_depth(
    ctx: WorkerContext, passes: int, *, admitted: int = FREED
) -> tuple[float, float]:
    """Median CPU and wall of ``passes`` passes, each after the last pass's runs finished."""
    cpus, walls = [], []
    placed: list[str] = []
    for _ in range(passes):
        _finish(ctx, placed)
        wall, cpu, result = _timed_pass(ctx)
        placed = result.placed
        if len(placed) != admitted:
            raise RuntimeError(f"a pass admitted {len(placed)} runs, expected {admitted}")
        cpus.append(cpu)
        walls.append(wall)
    _finish(ctx, placed)
    return statistics.median(cpus), statistics.median(walls)


def _nearly_full(inventory: GpuInventory, free: int) -> GpuInventory:
    """``inventory`` with every GPU taken by pods Berth did not create but ``free`` GPUs, one
    on each of the first GPU nodes: what the proxy worker publishes for a busy cluster."""
    nodes: list[NodeInventory] = []
    left = free
    for node in inventory.nodes:
        if node.gpus:
            gpus = dict.fromkeys(node.free.gpus, 0)
            if left > 0:
                gpus[node.gpus[0].resource], left = 1, left - 1
            node = node.model_copy(update={"free": node.free.model_copy(update={"gpus": gpus})})
        nodes.append(node)
    return inventory.model_copy(update={"nodes": tuple(nodes)})


@contextmanager
def _context(url: str, home: Path, kubeconfig: Path) -> Iterator[WorkerContext]:
    config = home / "server" / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    backend = {"type": "kubernetes", "kubeconfig": {"filename": str(kubeconfig)}}
    projects = [{"name": p, "backends": [backend]} for p in ("main", "other")]
    config.write_text(yaml.safe_dump({"projects": projects}))
    prefix = f"projection-{secrets.token_hex(3)}"
    ctx = build_context(Settings(home=home, redis=RedisSettings(url=url, key_prefix=prefix)))
    try:
        yield ctx
    finally:
        ctx.store.r.flushdb()
        ctx.close()


def _submit(ctx: WorkerContext, count: int, *, first: int) -> None:
    """``count`` one-GPU runs, as the API stores them, split over two projects."""
    conf = parse_run_configuration(
        "type: task\ncommands: [train]\nresources: {gpu: 1, cpu: 1, memory: 1GB}\n"
    )
    stored = conf.model_dump(mode="json")
    for i in range(first, first + count):
        run = Run(
            id=secrets.token_hex(16),
            project=("main", "other")[i % 2],
            name=f"r{i:06d}",
            user="bench",
            configuration=stored,
            configuration_type="task",
        )
        jobs = jobs_for(run, conf)
        run.job_ids = [j.id for j in jobs]
        event = Event(at=run.submitted_at, kind="status", message="submitted")
        ctx.store.create_run(run, jobs, event)


def _timed_pass(ctx: WorkerContext) -> tuple[float, float, scheduling.PassResult]:
    """Wall time, and CPU of this process plus the Redis server's, of one real pass."""
    before = _redis_cpu(ctx.store.r)
    # This thread only: in the KWOK run the watcher's threads share the process.
    wall, cpu = time.perf_counter(), time.thread_time()
    result = scheduling.run_pass(ctx)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return wall, cpu + _redis_cpu(ctx.store.r) - before, result


def _redis_cpu(r: redis.Redis[bytes]) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _finish(ctx: WorkerContext, names: list[str]) -> None:
    """What following the pods does when they succeed: the runs placed last pass are done."""
    writer = Writer(ctx.store)
    for name in names:
        for project in ("main", "other"):
            run_id = ctx.store.r.get(ctx.store.key("runname", project, name))
            run = ctx.store.find_run(run_id.decode()) if run_id else None
            if run is None:
                continue
            jobs = [j.model_copy(update={"status": RunStatus.DONE}) for j in ctx.store.jobs_of(run)]
            writer.write(Change(run=run.model_copy(update={"status": RunStatus.DONE}), jobs=jobs))


# --- 4: one simulated run on KWOK --------------------------------------------------------

LOAD_NAMESPACE = "bench-projection"


def _simulated(m: Measured, tmp: Path, sizes: Sizes, say: Say) -> None:
    directory = tmp / "projection-cluster"
    pools_file = tmp / "projection-pools.yaml"
    # cluster.up creates nodes one at a time; the bench creates them LOAD_THREADS at a time.
    pools_file.write_text(yaml.safe_dump({"pools": []}))
    start = time.monotonic()
    state, _ = cluster.up(directory, pools_file=pools_file, timeout_s=600, progress=say)
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=120.0)
    try:
        say(f"projection: {sizes.kwok_nodes:,} KWOK nodes")
        _create_nodes(k, _pools(sizes.kwok_nodes))
        m.kwok["cluster up, every node Ready (wall)"] = time.monotonic() - start
        say(f"projection: a pod on each of {sizes.kwok_nodes:,} nodes")
        ensure_namespace(k, LOAD_NAMESPACE)
        start = time.monotonic()
        m.kwok["pods"] = _fill_nodes(k, leave=FREED)
        m.kwok["pods created (wall)"] = time.monotonic() - start
        with (
            private_redis() as url,
            _context(url, tmp / "kwok-home", Path(state.kubeconfig)) as ctx,
        ):
            _on_cluster(m, k, ctx, sizes, say, kubeconfig=state.kubeconfig)
    finally:
        k.close()
        cluster.down(directory)


def _on_cluster(
    m: Measured, k: kube.Kube, ctx: WorkerContext, sizes: Sizes, say: Say, *, kubeconfig: str
) -> None:
    key = ctx.clusters.key_for("main")

    def publish(inventory: GpuInventory) -> None:
        ctx.store.publish_inventory(key, inventory.to_json(), CHANNEL)

    watcher = InventoryWatcher(k, publish=publish)
    start = time.monotonic()
    watcher.start()
    try:
        if not watcher.wait_synced(900):
            raise RuntimeError("the inventory watcher published nothing in 900 s")
        m.kwok["first inventory: watcher start -> published (wall)"] = time.monotonic() - start
        m.kwok["first inventory: the watcher's threads (CPU)"] = sum(_watcher_cpu().values())
        raw = ctx.store.inventory_json(key) or b""
        m.kwok["inventory KiB"] = len(raw) / 1024
        inventory = GpuInventory.from_json(raw)
        m.kwok["nodes"] = len(inventory.nodes)
        m.kwok["GPUs"] = _gpus(inventory)
        m.kwok["GPUs free"] = sum(n.free.gpus.get(GPU, 0) for n in inventory.nodes)
        say(f"projection: {sizes.kwok_waiting:,} waiting runs into Redis")
        start = time.monotonic()
        _submit(ctx, sizes.kwok_waiting, first=0)
        m.kwok["submit per run (wall)"] = (time.monotonic() - start) / sizes.kwok_waiting
        wall, cpu, result = _timed_pass(ctx)
        m.kwok["first pass: submitted -> pending (wall)"] = wall
        m.kwok["first pass: submitted -> pending (CPU)"] = cpu
        _finish(ctx, result.placed)
        say("projection: passes at depth over the KWOK inventory")
        admitted = len(result.placed)
        cpu, wall = _passes_at_depth(ctx, STORE_PASSES, admitted=admitted)
        m.kwok["admitted per pass"] = admitted
        m.kwok["pass at depth (CPU)"] = cpu
        m.kwok["pass at depth (wall)"] = wall
        say(f"projection: churn of {sizes.churn_pods:,} foreign pods")
        _churn(m, k, watcher, sizes.churn_pods, kubeconfig)
    finally:
        watcher.stop()


def _create_nodes(k: kube.Kube, pools: NodePools, *, timeout_s: float = 1200) -> None:
    bodies = node_bodies(pools)
    burst.concurrently(lambda body: k.call(k.core.create_node, body), bodies, LOAD_THREADS)
    names = {body["metadata"]["name"] for body in bodies}
    deadline = time.monotonic() + timeout_s
    while not names <= _ready_nodes(k):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(names):,} KWOK nodes not Ready in {timeout_s:.0f} s")
        time.sleep(5.0)  # each look lists every node: rarely, not to slow KWOK down


def _ready_nodes(k: kube.Kube) -> set[str]:
    return {
        node["metadata"]["name"]
        for node in _raw_nodes(k)
        for condition in node.get("status", {}).get("conditions") or []
        if condition["type"] == "Ready" and condition["status"] == "True"
    }


def _raw_nodes(k: kube.Kube) -> list[dict[str, Any]]:
    """Every node as JSON, not as V1Node objects: at 10,000 nodes the client would take
    longer to build those than KWOK takes to make the nodes Ready."""
    raw = k.call(k.core.list_node, _preload_content=False)
    return sorted(json.loads(raw.data)["items"], key=lambda n: str(n["metadata"]["name"]))


def _fill_nodes(k: kube.Kube, *, leave: int) -> int:
    """One foreign pod per node, holding every GPU of it but one GPU on each of the first
    ``leave`` GPU nodes; pods created."""
    bodies, left = [], leave
    for node in _raw_nodes(k):
        name = node["metadata"]["name"]
        gpus = int((node["status"].get("allocatable") or {}).get(GPU, "0"))
        if gpus and left > 0:
            gpus, left = gpus - 1, left - 1
        requests = {"cpu": "100m", "memory": "128Mi"} | ({GPU: str(gpus)} if gpus else {})
        bodies.append(_pod_body(f"fill-{name}", name, requests))
    burst.concurrently(
        lambda body: k.call(k.core.create_namespaced_pod, LOAD_NAMESPACE, body),
        bodies,
        LOAD_THREADS,
    )
    return len(bodies)


def _churn(
    m: Measured, k: kube.Kube, watcher: InventoryWatcher, count: int, kubeconfig: str
) -> None:
    """Create and delete ``count`` small foreign pods on CPU nodes; the watcher's CPU per
    event, its watch threads (deserializing) apart from its consumer (builder, snapshots,
    publishes), over a quiet baseline. The client runs in a child process: its threads
    would otherwise share this interpreter's lock with the watcher's and slow them."""
    quiet_s = 5.0
    before, cpu0 = watcher.health(), _watcher_cpu()
    time.sleep(quiet_s)  # the baseline: what the watcher costs with no pod changing
    idle = watcher.health().events_seen - before.events_seen
    idle_cpu = sum(_watcher_cpu().values()) - sum(cpu0.values())
    nodes = [n for n in _node_names(k) if n.startswith("kwok-cpu-")] or _node_names(k)
    bodies = [
        _pod_body(
            f"churn-{i}", nodes[i % len(nodes)], {"cpu": "10m", "memory": "16Mi"}, role="churn"
        )
        for i in range(count)
    ]
    start, health, cpu = time.monotonic(), watcher.health(), _watcher_cpu()
    spawn = multiprocessing.get_context("spawn")
    counts: multiprocessing.Queue[tuple[int, float]] = spawn.Queue()
    child = spawn.Process(target=churn_pods, args=(kubeconfig, bodies, counts))
    child.start()
    child.join(timeout=900)
    if child.exitcode != 0:
        raise RuntimeError(f"the churn client exited with {child.exitcode}")
    counted, churn_s = counts.get(timeout=10)
    events = max(counted, 1)
    seen = _settled(watcher)
    wall = time.monotonic() - start  # the idle baseline is scaled to the whole window
    used = {name: t - cpu.get(name, 0.0) for name, t in _watcher_cpu().items()}
    # The pod watch's thread alone: node events (KWOK's status updates) have their own.
    watching = used.get("inventory-watch-pods", 0.0)
    consuming = used.get("inventory-consumer", 0.0) - idle_cpu * wall / quiet_s
    publishes = seen.publishes - health.publishes
    m.kwok["churn pods"] = count
    m.kwok["churn: events per pod (create + delete)"] = events / count
    m.kwok["churn: watch threads' CPU per event"] = watching / events
    m.kwok["churn: consumer CPU per event, its publishes included"] = consuming / events
    m.kwok["churn: publishes"] = publishes
    m.kwok["churn: consumer CPU per publish, its events included"] = consuming / max(publishes, 1)
    m.kwok["churn: pod events per second, create and delete in 16 threads"] = events / churn_s
    m.kwok["churn: events of other pods and nodes the watcher saw meanwhile"] = (
        seen.events_seen - health.events_seen - events
    )
    m.kwok["idle: watcher events per second (nodes' status updates)"] = idle / quiet_s
    m.kwok["idle: watcher CPU per second"] = idle_cpu / quiet_s


def churn_pods(kubeconfig: str, bodies: list[dict[str, Any]], counts: Any) -> None:
    """The churn's client, in a child process: create then delete ``bodies``, LOAD_THREADS
    at a time, and put on ``counts`` how many watch events their pods made, and the seconds
    that took."""
    k = kube.connect(kubeconfig=Path(kubeconfig), timeout=120.0)
    counter = _PodEvents(k, "bench=churn")
    start = time.monotonic()

    def create(body: dict[str, Any]) -> None:
        k.call(k.core.create_namespaced_pod, LOAD_NAMESPACE, body)

    def delete(body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        k.call(k.core.delete_namespaced_pod, name, LOAD_NAMESPACE, grace_period_seconds=0)

    try:
        burst.concurrently(create, bodies, LOAD_THREADS)
        burst.concurrently(delete, bodies, LOAD_THREADS)
        counts.put((counter.stop(), time.monotonic() - start))
    finally:
        k.close()


class _PodEvents:
    """Counts the watch events of pods matching a selector in LOAD_NAMESPACE, from a watch
    of the bench's own (so the watcher's events of other kinds are not counted)."""

    def __init__(self, k: kube.Kube, selector: str) -> None:
        self._k, self._selector = k, selector
        listed = k.call(k.core.list_namespaced_pod, LOAD_NAMESPACE, label_selector=selector)
        self._version = listed.metadata.resource_version
        self.count = 0
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="churn-events")
        self._thread.start()

    def stop(self) -> int:
        """The count once it has not grown for SETTLE_S (KWOK is still marking pods Running
        after the client's last call)."""
        last, since = -1, time.monotonic()
        deadline = since + 300
        while time.monotonic() - since < SETTLE_S and time.monotonic() < deadline:
            if self.count != last:
                last, since = self.count, time.monotonic()
            time.sleep(0.1)
        self._watch.stop()
        self._thread.join(timeout=30)
        return self.count

    def _follow(self) -> None:
        events = self._watch.stream(
            self._k.core.list_namespaced_pod,
            LOAD_NAMESPACE,
            label_selector=self._selector,
            resource_version=self._version,
            timeout_seconds=600,
            _request_timeout=(30, 600),
        )
        try:
            for event in events:
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self.count += 1
        except (urllib3.exceptions.HTTPError, OSError):
            pass  # stop() shut the socket under the read: the count is complete


def _settled(watcher: InventoryWatcher) -> Any:
    """The watcher's health once no event has come for SETTLE_S (the churn's tail)."""
    last, since = watcher.health(), time.monotonic()
    deadline = since + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = watcher.health()
        if now.events_seen != last.events_seen:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE_S:
            break
    return last


def _watcher_cpu() -> dict[str, float]:
    """CPU seconds used so far by each of this process's inventory watcher threads (watches
    and consumer), read per thread from /proc so the rest of the process is not counted."""
    return {
        thread.name: _thread_cpu(thread.native_id)
        for thread in threading.enumerate()
        if thread.name.startswith("inventory-") and thread.native_id is not None
    }


def _thread_cpu(tid: int) -> float:
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5); [0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node_names(k: kube.Kube) -> list[str]:
    return [str(n["metadata"]["name"]) for n in _raw_nodes(k)]


def _pod_body(
    name: str, node: str, requests: dict[str, str], *, role: str = "fill"
) -> dict[str, Any]:
    resources = {"requests": requests, "limits": dict(requests)}
    container = {"name": "main", "image": "x", "resources": resources}
    return {
        "metadata": {"name": name, "namespace": LOAD_NAMESPACE, "labels": {"bench": role}},
        "spec": {"nodeName": node, "containers": [container]},
    }


# --- the fleet ------------------------------------------------------------------------------


def _pools(nodes: int) -> NodePools:
    """Scenario 6's mixed fleet at ``nodes`` nodes (40% 8xH100, 30% 8xA100, 20% 1xA10, the
    rest CPU-only), as KWOK node pools."""
    pools = [
        NodePool(
            name=name,
            count=round(nodes * share),
            cpu="192",
            memory="2000Gi",
            gpu=GpuSpec(product=product, count=count, memory_mib=memory),
        )
        for name, share, product, count, memory in placement.FLEET
    ]
    pools.append(NodePool(name="cpu", count=nodes - sum(p.count for p in pools), cpu="64"))
    return NodePools(pools=pools)


def _fleet(nodes: int) -> tuple[list[Any], list[Any]]:
    """V1Nodes of the fleet and V1Pods using a random share of each node's GPUs, as
    scenario 6 builds them (same seed), kept as objects for the builder."""
    rng = random.Random(placement.SEED)
    api = client.ApiClient()
    v1_nodes, v1_pods = [], []
    for body in node_bodies(_pools(nodes)):
        body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        v1_nodes.append(_deserialize(api, body, "V1Node"))
        name = body["metadata"]["name"]
        gpus = int(body["status"]["allocatable"].get(GPU, "0"))
        for i in range(rng.randint(0, gpus)):
            pod = _pod_body(f"{name}-{i}", name, {GPU: "1", "cpu": "4", "memory": "16Gi"})
            pod["status"] = {"phase": "Running"}
            v1_pods.append(_deserialize(api, pod, "V1Pod"))
    api.close()
    return v1_nodes, v1_pods


def _inventory(nodes: list[Any], pods: list[Any]) -> GpuInventory:
    builder = InventoryBuilder()
    builder.reset(nodes, pods)
    return builder.snapshot()


def _deserialize(api: client.ApiClient, body: dict[str, Any], kind: str) -> Any:
    return api.deserialize(json.dumps(body), kind, "application/json")


def _gpus(inventory: GpuInventory) -> int:
    return sum(g.count for n in inventory.nodes for g in n.gpus)


def _median_cpu(fn: Callable[[], object], *, calls: int = 0) -> float:
    """Median CPU seconds of one call, over ``calls`` calls or about a second's worth."""
    samples: list[float] = []
    deadline = time.perf_counter() + 1.0
    while len(samples) < max(calls, REPEATS) or (not calls and time.perf_counter() < deadline):
        start = time.thread_time()
        fn()
        samples.append(time.thread_time() - start)
    return statistics.median(samples)


def _median_wall(fn: Callable[[], object]) -> float:
    samples: list[float] = []
    for _ in range(REPEATS * 3):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the projection -------------------------------------------------------------------------


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """The least-squares line through ``points`` (x, y): (slope, intercept)."""
    n = len(points)
    if n < 2:
        return math.nan, math.nan
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return math.nan, math.nan
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return slope, mean_y - slope * mean_x


def exponent(points: list[tuple[int, float]]) -> float:
    """``b`` in y ~ x**b, fitted on logarithms: 1 is linear, under 1 sublinear."""
    logs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    n = len(logs)
    if n < 2:
        return math.nan
    mean_x, mean_y = sum(x for x, _ in logs) / n, sum(y for _, y in logs) / n
    spread = sum((x - mean_x) ** 2 for x, _ in logs)
    return sum((x - mean_x) * (y - mean_y) for x, y in logs) / spread if spread else math.nan


@dataclass(frozen=True)
class Demand:
    job_minutes: int
    admissions_per_s: float
    """One-GPU jobs of this length keeping every GPU busy: GPUs / length."""
    events_per_s: float
    pass_s: float
    """A pass at the target depth that admits what frees while it runs; inf: never catches up."""
    admissions_share: float
    """Of that pass, the share spent placing the runs it admits."""


@dataclass(frozen=True)
class Projection:
    nodes: int
    waiting: int
    gpus: int
    running: int
    pass_waiting_s: float
    pass_running_s: float
    pass_fixed_s: float
    per_admission_s: float
    version_publish_s: float
    version_read_s: float
    per_event_s: float
    """The watch thread's deserialization plus the builder's update, per pod event."""
    foreign_events_ceiling: float
    """Events/s of pods Berth did not create the watcher absorbs on one core: each is
    applied, and snapshots are published back to back (one per publish cost + 50 ms)."""
    demands: tuple[Demand, ...]

    @property
    def pass_base_s(self) -> float:
        """A pass at depth that admits nothing: waiting runs, running jobs, fixed."""
        return self.pass_waiting_s + self.pass_running_s + self.pass_fixed_s

    @property
    def admissions_ceiling(self) -> float:
        """Admissions/s one scheduler process cannot pass however long its passes get."""
        return 1 / self.per_admission_s if self.per_admission_s > 0 else math.inf

    @property
    def events_ceiling(self) -> float:
        """Events/s of Berth's own pods (no snapshot to publish) on one core."""
        return 1 / self.per_event_s if self.per_event_s > 0 else math.nan


def project(m: Measured, *, nodes: int = TARGET_NODES, waiting: int = TARGET_WAITING) -> Projection:
    """The fitted lines read at ``nodes`` and ``waiting``; see the section for each term."""
    per_waiting, intercept = fit(m.store_by_waiting)
    admission_slope, admission_0 = fit(m.admission_by_nodes)
    measured_at = max(n for n, _ in m.admission_by_nodes)
    # The store's cost per admission was measured at the largest fleet; other sizes scale
    # it by plan()'s growth with nodes (the placement is what grows).
    scale = (admission_0 + admission_slope * nodes) / (admission_0 + admission_slope * measured_at)
    per_admission = m.store_per_admission * scale
    gpus = round(m.gpus_at[measured_at] * nodes / measured_at)
    per_holding = m.holding_by_nodes[-1][1]  # at the largest fleet: the most jobs running
    version = _fitted(m.per_version, nodes)
    events_per_pod = m.kwok.get("churn: events per pod (create + delete)", math.nan)
    per_event = m.kwok.get("churn: watch threads' CPU per event", math.nan) + m.per_event.get(
        "upsert", math.nan
    )
    publish = version["snapshot"] + version["to_json"] + version["publish"]
    publishing = publish / (publish + PUBLISH_SPACING_S)  # share of the core, churning
    p = Projection(
        nodes=nodes,
        waiting=waiting,
        gpus=gpus,
        running=gpus,
        pass_waiting_s=per_waiting * waiting,
        pass_running_s=per_holding * gpus,
        pass_fixed_s=intercept,
        per_admission_s=per_admission,
        version_publish_s=publish,
        version_read_s=version["fetch"] + version["from_json"] + version["cold_match"],
        per_event_s=per_event,
        foreign_events_ceiling=(1 - publishing) / per_event,
        demands=(),
    )
    demands = []
    for minutes in JOB_MINUTES:
        rate = gpus / (minutes * 60)
        busy = rate * p.per_admission_s  # share of each second spent placing
        pass_s = p.pass_base_s / (1 - busy) if busy < 1 else math.inf
        demands.append(Demand(minutes, rate, rate * events_per_pod, pass_s, min(busy, 1.0)))
    return replace(p, demands=tuple(demands))


def _fitted(per_version: dict[int, dict[str, float]], nodes: int) -> dict[str, float]:
    """Each per-version cost read off its line over the fleet sizes, at ``nodes``."""
    names = next(iter(per_version.values())).keys()
    out = {}
    for name in names:
        slope, intercept = fit([(n, costs[name]) for n, costs in per_version.items()])
        out[name] = intercept + slope * nodes
    return out


# --- the section --------------------------------------------------------------------------


def section(
    m: Measured, sizes: Sizes, *, command: str, minutes: float, load: tuple[str, str]
) -> list[str]:
    facts = machine()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    big = max(sizes.nodes)
    lines = [
        f"Reproduce with `{command}`. Run {when}; it took {minutes:.1f} minutes on "
        f"{facts['cpus (nproc)']} cores ({facts['cpu model']}, {facts['memory']}); load average"
        f" {load[0]} at the start, {load[1]} at the end. Every figure is CPU time on one core"
        " (the pass's: its thread plus the Redis server's) unless it says wall.",
        "",
        f"Sizes: `plan()` over {_list(sizes.waiting)} waiting one-GPU runs at {big:,} nodes;"
        f" placement at {_list(sizes.nodes)} nodes; the real pass with {_list(sizes.store_waiting)}"
        f" runs waiting in Redis; the simulated run: {_kwok_sizes(m)}. The fleet is scenario 6's"
        " (40% 8xH100, 30% 8xA100, 20% 1xA10, 10% CPU-only); every waiting run asks one GPU of"
        " any model, 1 CPU and 1 GiB, the widest fit.",
        "",
        "### Measured per-unit costs",
        "",
        "| unit | at | cost | how |",
        "|---|---|---:|---|",
        *_unit_rows(m, big),
        "",
        "### Fitted lines",
        "",
        "| cost | points (x: cost) | slope | intercept | growth exponent |",
        "|---|---|---:|---:|---:|",
        *_fit_rows(m),
        "",
        "### The simulated run on KWOK",
        "",
        "| measurement | value |",
        "|---|---:|",
        *(f"| {what} | {_kwok_cell(what, value)} |" for what, value in m.kwok.items()),
    ]
    p = project(m)
    lines += ["", "### Projection", "", *_projection_rows(p), "", *_verdict(p)]
    if m.notes:
        lines += ["", *(f"- {note}" for note in m.notes)]
    return lines


def _unit_rows(m: Measured, big: int) -> list[str]:
    per_waiting, _ = fit(m.store_by_waiting)
    plan_waiting, _ = fit(m.plan_by_waiting)
    rows = [
        (
            "waiting run, per pass: the real pass",
            f"{_list(x for x, _ in m.store_by_waiting)} waiting",
            _t(per_waiting),
            "slope of pass CPU (worker + Redis) over depth",
        ),
        (
            "waiting run, per pass: plan() alone",
            f"{big:,} nodes",
            _t(plan_waiting),
            "slope of plan() CPU over depth, cluster full but 8 GPUs",
        ),
        (
            "admission: the real pass (place, commit, send)",
            f"{big:,} nodes",
            _t(m.store_per_admission),
            f"passes admitting {FREED * 8} against {FREED}, per extra run",
        ),
        *(
            (
                "admission: plan() alone",
                f"{n:,} nodes",
                _t(cost),
                "a pass admitting 20 minus one admitting none, per run",
            )
            for n, cost in m.admission_by_nodes
        ),
        *(
            (
                "running job, per pass: plan() alone",
                f"{count:,} running",
                _t(cost),
                "full of Berth's jobs minus full of foreign pods, per job",
            )
            for count, cost in m.holding_by_nodes
        ),
        ("submitting a run (store.create_run)", "", _t(m.submit_per_run), "wall"),
        (
            "pod event: watch thread's deserialization",
            "",
            _t(m.per_event.get("deserialize", math.nan)),
            "Watch.unmarshal_event of one MODIFIED V1Pod",
        ),
        (
            "pod event: InventoryBuilder.upsert_pod",
            "",
            _t(m.per_event.get("upsert", math.nan)),
            "a change to one pod's requests",
        ),
    ]
    for n, costs in sorted(m.per_version.items()):
        rows.append(
            (
                "inventory version: proxy worker (snapshot + JSON + Redis SET)",
                f"{n:,} nodes",
                _t(costs["snapshot"] + costs["to_json"] + costs["publish"]),
                f"{_t(costs['snapshot'])} + {_t(costs['to_json'])} + "
                f"{_t(costs['publish'])} wall; {costs['kib']:,.0f} KiB",
            )
        )
        rows.append(
            (
                "inventory version: each pass (GET + parse + first match)",
                f"{n:,} nodes",
                _t(costs["fetch"] + costs["from_json"] + costs["cold_match"]),
                f"{_t(costs['fetch'])} wall + {_t(costs['from_json'])} + {_t(costs['cold_match'])}",
            )
        )
    return [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]


def _fit_rows(m: Measured) -> list[str]:
    rows = []
    for what, points, unit in (
        ("plan() per pass, by waiting runs", m.plan_by_waiting, "waiting"),
        ("real pass per pass, by waiting runs", m.store_by_waiting, "waiting"),
        ("plan() per admission, by nodes", m.admission_by_nodes, "nodes"),
    ):
        slope, intercept = fit(points)
        shown = ", ".join(f"{x:,}: {_t(y)}" for x, y in points)
        rows.append(
            f"| {what} | {shown} | {_t(slope)} per {unit[:-1] if unit == 'nodes' else 'run'}"
            f" | {_t(intercept)} | {exponent(points):.2f} |"
        )
    return rows


def _projection_rows(p: Projection) -> list[str]:
    rows = [
        "| at 10,000 nodes and 100,000 waiting runs | value |",
        "|---|---:|",
        f"| GPUs (the fleet at {p.nodes:,} nodes), all held by one-GPU jobs | {p.gpus:,} |",
        f"| pass that admits nothing: the {p.waiting:,} waiting runs | {_t(p.pass_waiting_s)} |",
        f"| ... the {p.running:,} running jobs (plan() only) | {_t(p.pass_running_s)} |",
        f"| ... fixed (the line's intercept) | {_t(p.pass_fixed_s)} |",
        f"| ... total | **{_t(p.pass_base_s)}** |",
        f"| each admission adds | {_t(p.per_admission_s)} |",
        f"| admissions/s one scheduler process can never exceed (1 / cost per admission) |"
        f" **{p.admissions_ceiling:,.0f}/s** |",
        f"| a new inventory version: the proxy worker publishes it | {_t(p.version_publish_s)} |",
        f"| ... and every pass reads it | {_t(p.version_read_s)} |",
        f"| pod events/s one proxy worker core absorbs, nothing to publish (deserialize, apply) |"
        f" {p.events_ceiling:,.0f}/s |",
        f"| ... when each changes the inventory (snapshots back to back, 50 ms apart) |"
        f" {p.foreign_events_ceiling:,.0f}/s |",
    ]
    for d in p.demands:
        pass_text = "never catches up" if math.isinf(d.pass_s) else _t(d.pass_s)
        rows.append(
            f"| jobs of {d.job_minutes} min: admissions needed / pod events | "
            f"{d.admissions_per_s:,.0f}/s / {d.events_per_s:,.0f}/s |"
        )
        rows.append(
            f"| ... the pass that keeps up (placing: {d.admissions_share:.0%} of it)"
            f" | {pass_text} |"
        )
    return rows


def _verdict(p: Projection) -> list[str]:
    """The largest term of a pass run once a second at the target, with 5-minute jobs."""
    d = p.demands[1]
    terms = {
        f"placing the {d.admissions_per_s:,.0f} runs admitted (a scan of the nodes that fit,"
        " per run)": d.admissions_per_s * p.per_admission_s,
        f"deciding the {p.waiting:,} waiting runs": p.pass_waiting_s,
        f"walking the {p.running:,} running jobs": p.pass_running_s,
    }
    ranked = sorted(terms, key=lambda name: -terms[name])
    shown = "; ".join(f"{name}: {_t(terms[name])}" for name in ranked)
    return [
        f"**What must change first: {ranked[0].split(' (')[0]}.** With {d.job_minutes}-minute"
        f" one-GPU jobs the {p.gpus:,} GPUs of {p.nodes:,} nodes free"
        f" {d.admissions_per_s:,.0f} a second. A pass run once a second would cost, per term:"
        f" {shown}. One scheduler process can never admit more than"
        f" {p.admissions_ceiling:,.0f}/s there (one admission costs {_t(p.per_admission_s)})."
        f" The proxy worker would see {d.events_per_s:,.0f} pod events/s; it absorbs"
        f" {p.events_ceiling:,.0f}/s that publish nothing (Berth's own pods) and"
        f" {p.foreign_events_ceiling:,.0f}/s that each change the inventory."
    ]


def _kwok_sizes(m: Measured) -> str:
    k = m.kwok
    if "nodes" not in k:
        return "not run (see the notes)"
    return (
        f"{k['nodes']:,.0f} KWOK nodes ({k.get('GPUs', 0):,.0f} GPUs), {k.get('pods', 0):,.0f}"
        f" pods, {k.get('churn pods', 0):,.0f} more created and deleted, and the waiting runs"
        " in Redis named below"
    )


def _kwok_cell(what: str, value: float) -> str:
    if "(wall)" in what or "(CPU)" in what or "CPU per" in what or "per run" in what:
        return _t(value)
    if value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _t(seconds: float) -> str:
    """A duration with a unit that keeps three digits."""
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "inf"
    a = abs(seconds)
    if a >= 1:
        return f"{seconds:,.2f} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _list(values: Any) -> str:
    return " / ".join(f"{v:,}" for v in values)


def write_section(path: Path, lines: list[str]) -> None:
    """Put the section into RESULTS.md in place of an earlier one (or at the end)."""
    text = path.read_text() if path.exists() else "# Berth benchmarks\n"
    body = f"## {TITLE}\n\n" + "\n".join(lines) + "\n"
    pattern = re.compile(rf"^## {re.escape(TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.projection", description=TITLE)
    p.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    p.add_argument("--kwok-nodes", type=int, help="KWOK nodes in the simulated run")
    p.add_argument("--kwok-waiting", type=int, help="waiting runs in the simulated run")
    p.add_argument("--results", help="write the section into this RESULTS.md")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.kwok_nodes is not None:
        sizes = replace(sizes, kwok_nodes=args.kwok_nodes)
    if args.kwok_waiting is not None:
        sizes = replace(sizes, kwok_waiting=args.kwok_waiting)
    given = argv if argv is not None else sys.argv[1:]
    command = ".venv/bin/python -m bench.projection " + " ".join(given)

    def say(text: str) -> None:
        print(f"[projection {time.strftime('%H:%M:%S')}] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="berth-projection-") as tmp:
        lines = run(Path(tmp), sizes=sizes, command=command.strip(), say=say)
    print("\n".join(lines))
    if args.results:
        write_section(Path(args.results), lines)


if __name__ == "__main__":
    main()
