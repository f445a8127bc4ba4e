"""The scheduling pass's view of the cluster beyond GPUs: pools, volumes, node selector.

Two calls for :mod:`workers.scheduling` (it owns the pass; these only compute):

- :func:`inventory_with_pools`, once per cluster and pass: the inventory plus
  the nodes the backend's autoscaling pools may still add (see
  :mod:`shared.autoscaling`), so the queue plans with them and never asks a
  pool for more than its maximum;
- :func:`narrow_request`, per queued run: the run's request limited to the
  nodes its volumes allow (a ReadWriteOnce claim in use pins the run to that
  node; a PersistentVolume's node affinity pins every run that mounts it) and
  that carry the backend's ``pod.node_selector``. It answers :class:`Blocked`
  when no node can take the run: ``permanent`` (the volumes' node affinities
  exclude each other) should fail the run; otherwise it waits for the claims'
  other users to finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from shared import autoscaling
from shared.gpu.inventory import GpuInventory
from shared.offers import Request
from shared.placement_facts import claim_states, selector_nodes, with_pools
from shared.records import Run
from shared.volume_placement import (
    allowed_nodes_for_volumes,
    describe_volume_limits,
    mounted_volumes,
)
from workers.context import WorkerContext


@dataclass(frozen=True)
class Blocked:
    reason: str
    permanent: bool


def inventory_with_pools(
    ctx: WorkerContext, project: str, inventory: GpuInventory, held: Iterable[str]
) -> GpuInventory:
    """``inventory`` plus pool nodes; ``held`` is the nodes of Berth's placements."""
    return with_pools(inventory, ctx.clusters.for_project(project), held=held)


def narrow_request(
    ctx: WorkerContext,
    run: Run,
    request: Request,
    inventory: GpuInventory,
    *,
    berth_nodes: Mapping[tuple[str, str], frozenset[str]],
) -> Request | Blocked:
    """``request`` limited to where the run's volumes and the node selector let it go."""
    cluster = ctx.clusters.for_project(run.project)
    allowed = request.allowed_nodes
    selector = cluster.backend.pod_settings().node_selector
    if selector:
        pool_nodes = {n.name for n in inventory.nodes if autoscaling.is_pool_node(n.name)}
        matching = selector_nodes(cluster, selector) | pool_nodes
        allowed = matching if allowed is None else allowed & matching
    names = mounted_volumes(run.configuration)
    if names:
        claims = claim_states(ctx.store, cluster, run.project, names, berth_nodes=berth_nodes)
        by_volumes = allowed_nodes_for_volumes(claims)
        if by_volumes is not None:
            narrowed = by_volumes if allowed is None else allowed & by_volumes
            if not narrowed:
                idle = [replace(c, used_on=frozenset(), pods=0) for c in claims]
                ever = allowed_nodes_for_volumes(idle)
                permanent = ever is not None and not (ever if allowed is None else allowed & ever)
                return Blocked(describe_volume_limits(claims), permanent=permanent)
            allowed = narrowed
    if allowed == request.allowed_nodes:
        return request
    return replace(request, allowed_nodes=allowed)
