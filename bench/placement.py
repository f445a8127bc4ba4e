"""Scenario 6: placement decision time per run at 100, 1,000 and 5,000 nodes.

Pure, no cluster: a synthetic mixed fleet (40% 8xH100, 30% 8xA100, 20% 1xA10,
10% CPU-only, every GPU node partly used by pods) as a :class:`GpuInventory`,
the way the proxy worker publishes it. Per size it times:

- :func:`shared.placement.offers.match` for one run (what ``berth offer`` and each
  admission ask), cycling through three requests: 1xH100, 8xA100 and one GPU
  of any model; warm (a snapshot's fitting nodes are cached per request shape,
  as in a pass over an unchanged inventory) and cold;
- the scheduling pass's pure core, :func:`shared.queueing.plan`, over 100
  queued one-GPU runs, per run decided;
- the pass's fixed cost per pass: reading the published inventory back
  (:meth:`GpuInventory.from_json`) when it changed, and from the bench's own
  ``redis-server`` the fetch of the whole snapshot against the version-only
  read (:meth:`Store.inventory_if_changed`) a pass makes when it did not.

Growth is the per-run time at the largest size over the smallest; linear in
nodes would be the node ratio (50x), so a growth at or under it is "no worse
than linear".
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from kubernetes import client

from bench.common import Figures, private_redis
from cli.local.nodes import GpuSpec, NodePool, NodePools, node_bodies
from shared.gpu.inventory import GpuInventory, build_inventory
from shared.placement.offers import Request, clear_fit_cache, match
from shared.queueing import QueuedRun, plan
from shared.state.store import Store

SCENARIO = "6 placement"
NODE_COUNTS = (100, 1_000, 5_000)
BUDGET_S = 2.0  # wall time per measured call kind and size, per repeat
MIN_CALLS = 3  # ...but never fewer calls than this, even when one call takes seconds
QUEUED = 20  # runs in one plan() call; its cost per run is what is reported
MORE_QUEUED = 60  # ...and a longer call, for each admission's own cost (all fit at 100 nodes)
SEED = 7  # the same synthetic fleet on every run, so runs compare
GIB = 2**30
# (pool, share of nodes, product label, GPUs per node, GPU memory MiB); the rest is CPU-only.
FLEET = (
    ("h100", 0.4, "NVIDIA-H100-80GB-HBM3", 8, 81559),
    ("a100", 0.3, "NVIDIA-A100-SXM4-80GB", 8, 81920),
    ("a10", 0.2, "NVIDIA-A10", 1, 23028),
)

REQUESTS = (
    Request(
        gpu_count=1,
        gpu_names=frozenset({"h100"}),
        cpu_millicores=1000,
        memory_bytes=GIB,
    ),
    Request(gpu_count=8, gpu_names=frozenset({"a100"}), cpu_millicores=8000, memory_bytes=64 * GIB),
    Request(gpu_count=1, cpu_millicores=1000, memory_bytes=GIB),
)


def run(figs: Figures, *, repeats: int, node_counts: tuple[int, ...] = NODE_COUNTS) -> None:
    inventories = {n: synthetic_inventory(n) for n in node_counts}
    with private_redis() as url:
        store = Store.connect(url, prefix="bench-placement", timeout_s=30)
        try:
            for _ in range(repeats):
                _one_repeat(figs, inventories, store, node_counts)
        finally:
            store.close()


def _one_repeat(
    figs: Figures,
    inventories: dict[int, GpuInventory],
    store: Store,
    node_counts: tuple[int, ...],
) -> None:
    per_run: dict[int, float] = {}
    per_plan: dict[int, float] = {}
    for n, inventory in inventories.items():
        per_run[n] = _median_seconds([partial(match, inventory, r) for r in REQUESTS])
        cold = _median_seconds([partial(_cold_match, inventory, r) for r in REQUESTS])
        queued = _queued(MORE_QUEUED)
        per_plan[n] = _median_seconds([partial(plan, inventory, queued[:QUEUED], [])]) / QUEUED
        # Each admission's own cost, without the pass's once-per-shape setup (which reads
        # every node that could fit once): the extra time MORE_QUEUED runs take over QUEUED.
        longer = _median_seconds([partial(plan, inventory, queued, [])])
        admitted = len(plan(inventory, queued, []).admits)
        marginal = (longer - per_plan[n] * QUEUED) / (MORE_QUEUED - QUEUED)
        text = inventory.to_json()
        load = _median_seconds([partial(GpuInventory.from_json, text)])
        figs.add(SCENARIO, f"match() per run, {n:,} nodes", per_run[n], "s")
        figs.add(
            SCENARIO,
            f"match() per run, first for its snapshot (cold), {n:,} nodes",
            cold,
            "s",
            note="the nodes that could ever fit, cached per snapshot and request",
        )
        figs.add(SCENARIO, f"plan() per run of {QUEUED} queued, {n:,} nodes", per_plan[n], "s")
        figs.add(
            SCENARIO,
            f"plan() per admission after the first {QUEUED}, {n:,} nodes",
            marginal,
            "s",
            note=f"({MORE_QUEUED} queued - {QUEUED}) / {MORE_QUEUED - QUEUED}; {admitted} admitted",
        )
        figs.add(
            SCENARIO,
            f"inventory read per pass (from_json), {n:,} nodes",
            load,
            "s",
            note=f"{len(text) / 1024:.0f} KiB of JSON",
        )
        key = f"synthetic-{n}"
        store.publish_inventory(key, text, "bench-inventory-changed")
        version, _ = store.inventory_if_changed(key, None)
        fetch = _median_seconds([partial(store.inventory_json, key)])
        check = _median_seconds([partial(store.inventory_if_changed, key, version)])
        figs.add(SCENARIO, f"inventory fetch per pass, whole snapshot, {n:,} nodes", fetch, "s")
        figs.add(
            SCENARIO,
            f"inventory read per pass when unchanged (version only), {n:,} nodes",
            check,
            "s",
        )
    lo, hi = min(node_counts), max(node_counts)
    linear = f"linear would be {hi / lo:.0f}x"
    figs.add(
        SCENARIO,
        f"match() growth {lo:,} -> {hi:,} nodes",
        per_run[hi] / per_run[lo],
        "x",
        linear,
    )
    figs.add(
        SCENARIO,
        f"plan() growth {lo:,} -> {hi:,} nodes",
        per_plan[hi] / per_plan[lo],
        "x",
        linear,
    )


def _queued(count: int) -> list[QueuedRun]:
    return [
        QueuedRun(
            run_id=f"r{i:04d}",
            project=("main", "other")[i % 2],
            priority=0,
            submitted_at=float(i),
            request=REQUESTS[0],
        )
        for i in range(count)
    ]


def _cold_match(inventory: GpuInventory, request: Request) -> object:
    clear_fit_cache()
    return match(inventory, request)


def synthetic_inventory(nodes: int) -> GpuInventory:
    """A mixed fleet of ``nodes`` nodes; each GPU node has a random share of its GPUs in use."""
    rng = random.Random(SEED)
    pools = [
        NodePool(
            name=name,
            count=round(nodes * share),
            cpu="192",
            memory="2000Gi",
            gpu=GpuSpec(product=product, count=count, memory_mib=memory),
        )
        for name, share, product, count, memory in FLEET
    ]
    pools.append(NodePool(name="cpu", count=nodes - sum(p.count for p in pools), cpu="64"))
    api = client.ApiClient()
    v1_nodes, v1_pods = [], []
    for body in node_bodies(NodePools(pools=pools)):
        body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        v1_nodes.append(api.deserialize(json.dumps(body), "V1Node", "application/json"))
        gpus = int(body["status"]["allocatable"].get("nvidia.com/gpu", "0"))
        for i in range(rng.randint(0, gpus)):
            pod = _pod(f"{body['metadata']['name']}-{i}", body["metadata"]["name"])
            v1_pods.append(api.deserialize(json.dumps(pod), "V1Pod", "application/json"))
    api.close()
    return build_inventory(v1_nodes, v1_pods)


def _pod(name: str, node: str) -> dict[str, object]:
    requests = {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"}
    return {
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "resources": {"requests": requests, "limits": requests},
                }
            ],
        },
        "status": {"phase": "Running"},
    }


def _median_seconds(calls: list[Callable[[], object]]) -> float:
    """Median wall time of one call, cycling through ``calls`` for about BUDGET_S."""
    samples: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    while len(samples) < MIN_CALLS or time.perf_counter() < deadline:
        for call in calls:
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)
