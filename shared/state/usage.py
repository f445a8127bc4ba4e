"""GPU usage over time, per project: what the dashboard's charts draw.

Beat samples every project every ``USAGE_EVERY_S`` (``workers/usage.py``) into a
Redis stream capped at ``_KEEP`` samples (a little over an hour), so a chart has
its last hour whoever was looking, and Redis holds a few KiB per project.
"""

from __future__ import annotations

from typing import Any

from shared.gpu.inventory import GpuInventory
from shared.placement.autoscaling import is_pool_node
from shared.state.store import Store, wrapped

USAGE_EVERY_S = 30.0
_KEEP = 130  # 65 minutes at one sample every 30 s


def gpu_totals(inventory: GpuInventory, *, held_by_berth: int) -> tuple[int, int]:
    """(GPUs in use, GPUs in all) on the cluster's real nodes: other workloads' and Berth's."""
    total = used = 0
    for node in inventory.nodes:
        if is_pool_node(node.name):
            continue
        for group in node.gpus:
            count = group.count
            total += count
            used += max(0, count - node.free_units(group))
    return min(total, used + held_by_berth), total


def record(store: Store, project: str, *, at: float, used: int, total: int, queued: int) -> None:
    fields = {"t": f"{at:.0f}", "used": used, "total": total, "queued": queued}
    with wrapped():
        store.r.xadd(store.key("usage", project), fields, maxlen=_KEEP, approximate=False)


def samples(store: Store, project: str, *, since: float) -> list[dict[str, Any]]:
    """The project's samples taken after ``since``, oldest first."""
    with wrapped():
        raw = store.r.xrange(store.key("usage", project), f"{int(since * 1000)}-0", "+")
    return [
        {
            "t": float(f[b"t"]),
            "used": int(f[b"used"]),
            "total": int(f[b"total"]),
            "queued": int(f[b"queued"]),
        }
        for _, f in raw
    ]
