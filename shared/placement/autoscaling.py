"""Node pools an autoscaler can grow, as capacity the queue can plan with. Pure.

**Design: a pool is planned as the nodes it could still add.** A pool of
``max_nodes`` that has ``n`` nodes now contributes ``max_nodes - n`` *pool
nodes* to the inventory: nodes that do not exist, each shaped like one node of
the pool and named ``~pool:<pool>:<index>``. The queue's planner
(:func:`shared.queueing.plan`) then needs no notion of autoscaling at all:

- a run no existing node could take but a pool node could is *possible*, and is
  placed on a pool node when nothing real fits;
- what Berth placed on pool nodes is subtracted like any placement, so the
  queue never asks a pool for more than its maximum;
- ``~`` sorts after every character of a Kubernetes node name (DNS-1123), so
  among equally good offers best-fit prefers a node that exists.

A job placed on a pool node gets a pod whose node affinity asks for the pool's
labels (:func:`pool_affinity`) instead of a node name; it waits in
``provisioning`` with :func:`waiting_reason` until a node joins, and after the
pool's ``scale_up_timeout`` (:func:`scale_up_timed_out`) it goes back to the
queue or fails, as its retry policy says. Once the pod is bound, the job's
placement names the real node, so the capacity moves from the pool node to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.configuration.kube_fields import NodePool
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import node_gpus

POOL_NODE_PREFIX = "~pool:"
# A pool that does not declare cpu or memory is not checked for them: this is more
# than any request (a million cores, an exbibyte), not a real node's size.
_UNDECLARED_MILLICORES = 10**9
_UNDECLARED_BYTES = 2**60
_GIB = 2**30


def pool_node_name(pool: str, index: int) -> str:
    return f"{POOL_NODE_PREFIX}{pool}:{index}"


def is_pool_node(node: str) -> bool:
    return node.startswith(POOL_NODE_PREFIX)


def pool_of(node: str) -> str | None:
    """The pool a pool node belongs to; None for a real node."""
    if not is_pool_node(node):
        return None
    return node[len(POOL_NODE_PREFIX) :].rpartition(":")[0] or None


def find_pool(pools: Sequence[NodePool], node: str) -> NodePool | None:
    name = pool_of(node)
    return next((p for p in pools if p.name == name), None)


def with_pool_capacity(
    inventory: GpuInventory,
    pools: Sequence[NodePool],
    *,
    existing: Mapping[str, int],
    held: Iterable[str] = (),
    node_selector: Mapping[str, str] | None = None,
) -> GpuInventory:
    """``inventory`` plus, per pool, one pool node for each node the pool may still add.

    ``existing`` counts each pool's nodes that exist now (nodes carrying all its
    labels); ``held`` lists the nodes of Berth's placements, so a pool node that a
    job holds keeps its name while its pool shrinks around it. Pools whose labels
    do not satisfy the backend's ``node_selector`` are left out: their nodes could
    never run Berth's pods.
    """
    held_set = set(held)
    extra: list[NodeInventory] = []
    for pool in pools:
        if node_selector and not _satisfies(pool.labels, node_selector):
            continue
        room = max(0, pool.max_nodes - existing.get(pool.name, 0))
        taken = sorted(
            (n for n in held_set if pool_of(n) == pool.name), key=lambda n: _index(n) or 0
        )
        names = taken[:room]
        index = 0
        while len(names) < room:
            name = pool_node_name(pool.name, index)
            if name not in names:
                names.append(name)
            index += 1
        extra += [pool_node(pool, name) for name in names]
    if not extra:
        return inventory
    nodes = sorted((*inventory.nodes, *extra), key=lambda n: n.name)
    return inventory.model_copy(update={"nodes": tuple(nodes)})


def pool_node(pool: NodePool, name: str) -> NodeInventory:
    """One node of ``pool`` as the inventory would see it on arrival: empty."""
    labels, allocatable = _gpu_labels(pool)
    groups = node_gpus(labels, allocatable).groups
    resources = Resources(
        cpu_millicores=int(pool.cpu * 1000) if pool.cpu is not None else _UNDECLARED_MILLICORES,
        memory_bytes=int(pool.memory * _GIB) if pool.memory is not None else _UNDECLARED_BYTES,
        ephemeral_storage_bytes=_UNDECLARED_BYTES,
        gpus={g.resource: g.count for g in groups},
    )
    return NodeInventory(name=name, gpus=groups, allocatable=resources, free=resources)


def pool_selector(pool: NodePool) -> str:
    """A label selector for the pool's existing nodes (``key=value,...``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(pool.labels.items()))


def pool_affinity(pool: NodePool) -> dict[str, Any]:
    """Required node affinity for any node of the pool, in place of a node name."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": k, "operator": "In", "values": [v]}
                            for k, v in sorted(pool.labels.items())
                        ]
                    }
                ]
            }
        }
    }


def waiting_reason(pool: NodePool) -> str:
    return (
        f"waiting for the autoscaler to add a node from pool {pool.name}"
        f" (up to {pool.scale_up_timeout}s)"
    )


def scale_up_timed_out(pool: NodePool, *, since: float, now: float) -> str | None:
    """Why the wait for a node of ``pool`` is over, or None while it may go on."""
    if now - since < pool.scale_up_timeout:
        return None
    return f"the autoscaler added no node to pool {pool.name} within {pool.scale_up_timeout}s"


def _gpu_labels(pool: NodePool) -> tuple[dict[str, str], dict[str, str]]:
    if pool.gpu is None:
        return {}, {}
    count = str(pool.gpus_per_node)
    mib = int(pool.gpu_memory * 1024) if pool.gpu_memory is not None else None
    if pool.gpu_vendor == "amd":
        labels = {"amd.com/gpu.product-name": pool.gpu}
        if mib is not None:
            labels["amd.com/gpu.vram"] = f"{mib}M"
        return labels, {"amd.com/gpu": count}
    labels = {"nvidia.com/gpu.product": pool.gpu, "nvidia.com/gpu.count": count}
    if mib is not None:
        labels["nvidia.com/gpu.memory"] = str(mib)
    return labels, {"nvidia.com/gpu": count}


def _index(node: str) -> int | None:
    tail = node.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


def _satisfies(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
