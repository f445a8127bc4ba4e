"""How fast the GPU inventory is built, updated and published.

Run by hand: ``.venv/bin/python -m bench.inventory``.

1. Pure: 1,000 synthetic nodes and 10,000 pods as the apiserver's JSON. A full
   :func:`build_inventory`, then the incremental :class:`InventoryBuilder`: one
   pod event, one ``snapshot()``, its JSON, and the reading of one watch line
   (what the watch thread pays per event), beside what turning that line into
   a ``V1Pod`` cost before the watch read raw JSON.
2. Live, when a local cluster runs at ``$BERTH_HOME/local`` (``berth local up``):
   an :class:`InventoryWatcher` on the real apiserver, and the latency from a
   pod DELETE to the published snapshot that gives its GPU back, over 50 pods.
"""

from __future__ import annotations

import gc
import json
import math
import random
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client

from cli.local import cluster
from shared import kube
from shared.errors import KubeNotFound
from shared.gpu.inventory import (
    GpuInventory,
    InventoryBuilder,
    NodeInventory,
    build_inventory,
    pod_record,
)
from shared.kube.raw import as_raw
from shared.settings import load_settings
from workers.inventory_watch import InventoryWatcher

NODES, PODS = 1_000, 10_000
EVENTS = 5_000  # pod events timed one by one; enough for a stable p99
SNAPSHOTS = 50
LIVE_PODS = 50
LIVE_NODE = "kwok-h100-0"
GPU = "nvidia.com/gpu"
SEED = 7  # the same synthetic cluster on every run, so runs compare

# (share of nodes, product label, GPUs per node, GPU memory MiB): a plausible mixed fleet.
POOLS = (
    (0.4, "NVIDIA-H100-80GB-HBM3", 8, 81559),
    (0.3, "NVIDIA-A100-SXM4-80GB", 8, 81920),
    (0.2, "NVIDIA-A10", 1, 23028),
    (0.1, None, 0, 0),
)


def main() -> None:
    rows = bench_pure()
    rows += bench_live()
    print_table(rows)


Row = tuple[str, str, str, str]  # what, p50 / value, p99, note


def bench_pure() -> list[Row]:
    rng = random.Random(SEED)
    nodes = [_node(i, rng) for i in range(NODES)]
    gpus_of = {n.metadata.name: int(n.status.allocatable.get(GPU, "0")) for n in nodes}
    names = list(gpus_of)
    # As the watch reads them: JSON, never client objects (kept as such only for the
    # before/after row of one event below).
    nodes_raw = [as_raw(n) for n in nodes]
    pods_raw = [as_raw(_pod(f"p{i}", rng.choice(names), gpus_of, rng)) for i in range(PODS)]

    full = [_seconds(partial(build_inventory, nodes_raw, pods_raw)) for _ in range(5)]
    builder = InventoryBuilder()
    reset_s = _seconds(partial(builder.reset, nodes_raw, pods_raw))
    cold = []  # every node's NodeInventory rebuilt, as after a relist
    for _ in range(5):
        builder.replace_nodes(nodes_raw)
        cold.append(_seconds(builder.snapshot))

    api = client.ApiClient()
    line = json.dumps({"type": "MODIFIED", "object": pods_raw[0]})
    deserialize = [
        _seconds(lambda: api.deserialize(line, "V1Pod", "application/json")) for _ in range(EVENTS)
    ]
    api.close()
    read = [_seconds(lambda: pod_record(json.loads(line)["object"])) for _ in range(EVENTS)]

    placed = [(p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods_raw]
    # The watcher keeps only records and the builder's sums; holding 10,000 pods
    # here would make the measurements below pay for garbage-collecting them.
    del nodes, nodes_raw, pods_raw
    gc.collect()
    changed, unchanged, snapshots = [], [], []
    for i in range(EVENTS):
        name, node = placed[rng.randrange(PODS)]
        new = pod_record(as_raw(_pod(name, node, gpus_of, rng)))
        changed.append(_seconds(partial(builder.upsert_pod, new)))
        unchanged.append(_seconds(partial(builder.upsert_pod, new)))
        if i % (EVENTS // SNAPSHOTS) == 0:
            snapshots.append(_seconds(builder.snapshot))  # one node to rebuild
    inventory = builder.snapshot()
    to_json = [_seconds(inventory.to_json) for _ in range(SNAPSHOTS)]
    size_kib = len(inventory.to_json()) / 1024

    build = statistics.median(full)
    per_change = _p(changed, 50) + _p(snapshots, 50)
    return [
        (f"build_inventory, {NODES} nodes + {PODS} pods", _ms(build), "", "median of 5"),
        ("InventoryBuilder.reset (same input)", _ms(reset_s), "", "once"),
        (
            "read one watch event (JSON -> PodRecord)",
            _us(_p(read, 50)),
            _us(_p(read, 99)),
            "what the watch thread pays per pod event",
        ),
        (
            "the same event as a V1Pod (before)",
            _us(_p(deserialize, 50)),
            _us(_p(deserialize, 99)),
            "the client's model objects, read until the tenth session",
        ),
        ("upsert_pod that changes requests", _us(_p(changed, 50)), _us(_p(changed, 99)), ""),
        ("upsert_pod that changes nothing", _us(_p(unchanged, 50)), _us(_p(unchanged, 99)), ""),
        ("snapshot() after one pod event", _ms(_p(snapshots, 50)), _ms(_p(snapshots, 99)), ""),
        ("snapshot() after a relist", _ms(_p(cold, 50)), _ms(_p(cold, 99)), "all nodes rebuilt"),
        ("snapshot().to_json()", _ms(_p(to_json, 50)), _ms(_p(to_json, 99)), f"{size_kib:.0f} KiB"),
        (
            "ratio: full build / (event + snapshot)",
            f"{build / per_change:.0f}x",
            "",
            "p50s; what the incremental builder saves per change",
        ),
        (
            "ratio: relist snapshot / snapshot after one event",
            f"{_p(cold, 50) / _p(snapshots, 50):.0f}x",
            "",
            "what the per-node cache saves",
        ),
    ]


def bench_live() -> list[Row]:
    settings = load_settings()
    state = cluster.read_state(settings.local_dir)
    running = cluster.status(settings.local_dir)
    if state is None or not running or not all(running.values()):
        return [
            ("live: pod delete -> published", "skipped", "", f"no cluster at {settings.local_dir}")
        ]
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
    try:
        return _bench_live(k)
    finally:
        k.close()


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


# --- synthetic objects ---------------------------------------------------------------


def _node(i: int, rng: random.Random) -> client.V1Node:
    _, product, count, memory = rng.choices(POOLS, weights=[p[0] for p in POOLS])[0]
    labels = {"kubernetes.io/hostname": f"node-{i}", "kubernetes.io/arch": "amd64"}
    allocatable = {
        "cpu": "191500m",
        "memory": "2013Gi",
        "ephemeral-storage": "3500Gi",
        "pods": "110",
    }
    taints = None
    if product is not None:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": str(count),
            "nvidia.com/gpu.memory": str(memory),
        }
        allocatable[GPU] = str(count)
        taints = [client.V1Taint(key=GPU, value="present", effect="NoSchedule")]
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=f"node-{i:04d}", labels=labels),
        spec=client.V1NodeSpec(taints=taints),
        status=client.V1NodeStatus(
            allocatable=allocatable,
            conditions=[client.V1NodeCondition(type="Ready", status="True")],
            node_info=client.V1NodeSystemInfo(
                architecture="amd64",
                boot_id="",
                container_runtime_version="",
                kernel_version="",
                kube_proxy_version="",
                kubelet_version="",
                machine_id="",
                operating_system="linux",
                os_image="",
                system_uuid="",
            ),
        ),
    )


def _pod(name: str, node: str, gpus_of: dict[str, int], rng: random.Random) -> client.V1Pod:
    requests = {
        "cpu": f"{rng.choice((250, 500, 2000, 8000))}m",
        "memory": f"{rng.choice((1, 4, 32))}Gi",
    }
    if gpus_of[node]:
        requests[GPU] = str(rng.randint(1, min(2, gpus_of[node])))
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace="bench", labels={"app": "x"}),
        spec=client.V1PodSpec(
            node_name=node,
            containers=[
                client.V1Container(
                    name="main",
                    image="busybox",
                    resources=client.V1ResourceRequirements(requests=requests, limits=requests),
                )
            ],
        ),
        status=client.V1PodStatus(phase="Running"),
    )


# --- live --------------------------------------------------------------------------------


def _bench_live(k: kube.Kube) -> list[Row]:
    gpus = _Published(lambda node: node.free.gpus.get(GPU, 0))
    cpu = _Published(lambda node: node.free.cpu_millicores)

    def publish(inventory: GpuInventory) -> None:
        gpus(inventory)
        cpu(inventory)

    watcher = InventoryWatcher(k, publish=publish)
    watcher.start()
    try:
        if not watcher.wait_synced(30):
            return [("live: pod delete -> published", "failed", "", "no first snapshot in 30 s")]
        with _namespace(k) as ns:
            sent, answered, back_to_back = _single_deletes(k, ns, gpus)
            burst = _burst_of_deletes(k, ns, cpu)
        health = watcher.health()
    finally:
        watcher.stop()
    note = f"{LIVE_PODS} pods on {LIVE_NODE}, one at a time, {QUIET_S * 1e3:.0f} ms apart"
    return [
        ("live: DELETE sent -> published", _ms(_p(sent, 50)), _ms(_p(sent, 99)), note),
        ("live: DELETE answered -> published", _ms(_p(answered, 50)), _ms(_p(answered, 99)), ""),
        (
            "live: DELETE at once after a publish",
            _ms(_p(back_to_back, 50)),
            _ms(_p(back_to_back, 99)),
            "held back by the 50 ms publish spacing",
        ),
        *burst,
        ("live: watcher totals", f"{health.publishes} publishes", "", f"{health.relists} relists"),
    ]


QUIET_S = 0.1  # longer than the 50 ms publish spacing, so a change is published at once
BURST_CPU_M = 100  # per burst pod; 50 of them fit any node


def _single_deletes(
    k: kube.Kube, ns: str, gpus: _Published
) -> tuple[list[float], list[float], list[float]]:
    """Create a 1-GPU pod, wait for its snapshot, delete it; time the snapshot that frees it."""
    base = gpus.latest()
    sent, answered, back_to_back = [], [], []
    for i in range(LIVE_PODS):
        name = f"single-{i}"
        t0 = time.monotonic()
        k.call(k.core.create_namespaced_pod, ns, _live_pod(name, {GPU: "1"}))
        gpus.wait_for(lambda free: free == base - 1, since=t0)
        time.sleep(QUIET_S)
        t0 = time.monotonic()
        k.call(k.core.delete_namespaced_pod, name, ns, grace_period_seconds=0)
        t1 = time.monotonic()
        t_pub = gpus.wait_for(lambda free: free == base, since=t0)
        sent.append(t_pub - t0)
        answered.append(t_pub - t1)
        # The same again with no pause: the delete lands right after the create's snapshot.
        t0 = time.monotonic()
        k.call(k.core.create_namespaced_pod, ns, _live_pod(f"{name}-b", {GPU: "1"}))
        gpus.wait_for(lambda free: free == base - 1, since=t0)
        t0 = time.monotonic()
        k.call(k.core.delete_namespaced_pod, f"{name}-b", ns, grace_period_seconds=0)
        back_to_back.append(gpus.wait_for(lambda free: free == base, since=t0) - t0)
        time.sleep(QUIET_S)
    return sent, answered, back_to_back


def _burst_of_deletes(k: kube.Kube, ns: str, cpu: _Published) -> list[Row]:
    """Delete 50 pods as fast as one client can; how soon is the last one published, how often."""
    base = cpu.latest()
    t0 = time.monotonic()
    for i in range(LIVE_PODS):
        k.call(
            k.core.create_namespaced_pod, ns, _live_pod(f"burst-{i}", {"cpu": f"{BURST_CPU_M}m"})
        )
    cpu.wait_for(lambda free: free == base - LIVE_PODS * BURST_CPU_M, since=t0)
    time.sleep(QUIET_S)
    t0 = time.monotonic()
    for i in range(LIVE_PODS):
        k.call(k.core.delete_namespaced_pod, f"burst-{i}", ns, grace_period_seconds=0)
    t1 = time.monotonic()
    t_pub = cpu.wait_for(lambda free: free == base, since=t0)
    snapshots = cpu.count_since(t0)
    return [
        (
            f"live: burst of {LIVE_PODS} DELETEs -> last published",
            _ms(t_pub - t1),
            "",
            f"after the last DELETE answered; sent over {_ms(t1 - t0)}, {snapshots} snapshots",
        )
    ]


class _Published:
    """A publish callback: when each value of one figure of LIVE_NODE was published."""

    def __init__(self, figure: Callable[[NodeInventory], int]) -> None:
        self._figure = figure
        self._cond = threading.Condition()
        self._history: list[tuple[float, int]] = []

    def __call__(self, inventory: GpuInventory) -> None:
        node = inventory.node(LIVE_NODE)
        value = self._figure(node) if node else -1
        with self._cond:
            self._history.append((time.monotonic(), value))
            self._cond.notify_all()

    def latest(self) -> int:
        with self._cond:
            return self._history[-1][1]

    def count_since(self, since: float) -> int:
        with self._cond:
            return sum(1 for t, _ in self._history if t >= since)

    def wait_for(self, ok: Callable[[int], bool], *, since: float, timeout: float = 10.0) -> float:
        """When the first snapshot published after ``since`` with an ``ok`` value came."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((t for t, v in self._history if t >= since and ok(v)), None),
                timeout,
            )
        if found is None:
            raise TimeoutError(f"no published snapshot matched within {timeout}s")
        return found


@contextmanager
def _namespace(k: kube.Kube) -> Iterator[str]:
    name = f"bench-inv-{secrets.token_hex(3)}"
    k.call(k.core.create_namespace, {"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while True:  # the ServiceAccount admission plugin refuses pods until this exists
        try:
            k.call(k.core.read_namespaced_service_account, "default", name)
            break
        except KubeNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield name
    finally:
        k.call(k.core.delete_namespace, name)


def _live_pod(name: str, requests: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": LIVE_NODE,
            "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"requests": requests, "limits": requests},
                }
            ],
        },
    }


# --- figures -----------------------------------------------------------------------------


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _p(samples: list[float], q: int) -> float:
    """Nearest-rank percentile: p99 of 50 samples is the largest, not an interpolation."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


if __name__ == "__main__":
    main()
