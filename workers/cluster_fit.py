"""The scheduling pass's view of the cluster beyond GPUs: pools, volumes, node selector.

Two calls for :mod:`workers.scheduling` (it owns the pass; these only compute):

- :func:`inventory_with_pools`, once per cluster and pass: the inventory plus
  the nodes the backend's autoscaling pools may still add (see
  :mod:`shared.placement.autoscaling`), so the queue plans with them and never asks a
  pool for more than its maximum;
- :func:`narrow_request`, per queued run: the run's request limited to the
  nodes its volumes allow (a ReadWriteOnce claim in use pins the run to that
  node; a PersistentVolume's node affinity pins every run that mounts it) and
  that carry the backend's ``pod.node_selector``. It answers :class:`Blocked`
  when no node can take the run: ``permanent`` (the volumes' node affinities
  exclude each other) should fail the run; otherwise it waits for the claims'
  other users to finish, or, for a single-node claim no one uses yet, for the
  pass after the one where another run mounting it entered the queue (two
  placements in one pass could split it across nodes).

A :class:`PassFit` carries what one pass has read from the cluster, so a
queue of thousands of runs costs one node LIST per selector and one read per
claim, not one per run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from shared.errors import ConfigError, KubeError, KubeTemporaryError
from shared.gpu.inventory import GpuInventory
from shared.placement import autoscaling
from shared.placement.offers import Request
from shared.placement.placement_facts import claim_states, selector_nodes, with_pools
from shared.state.records import Run
from shared.volumes.volume_placement import (
    ClaimState,
    allowed_nodes_for_volumes,
    could_split,
    describe_volume_limits,
    mounted_volumes,
)
from workers.context import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blocked:
    reason: str
    permanent: bool


@dataclass
class PassFit:
    """One pass's reads of the cluster, and the unused single-node claims it gave out."""

    selectors: dict[tuple[tuple[str, str], ...], frozenset[str]] = field(default_factory=dict)
    claims: dict[tuple[str, str], ClaimState | None] = field(default_factory=dict)
    """(project, volume) -> its claim's state; None for a volume that does not exist."""
    first_user: dict[tuple[str, str], str] = field(default_factory=dict)
    """(project, volume) -> the run that entered the queue with it this pass."""
    unreachable: str | None = None
    """Why the apiserver did not answer this pass: no other run waits out its timeout."""


def inventory_with_pools(
    ctx: WorkerContext,
    project: str,
    inventory: GpuInventory,
    held: Iterable[str],
    *,
    fit: PassFit | None = None,
    cluster: str | None = None,
) -> GpuInventory:
    """``inventory`` plus pool nodes; ``held`` is the nodes of Berth's placements.

    Without the apiserver (pool sizes are counted there) the pass plans with the
    nodes that exist, rather than not at all.
    """
    if not ctx.server.backend_for(project, cluster).node_pools:
        return inventory  # nothing to add, and no reason to connect
    try:
        return with_pools(inventory, ctx.clusters.for_project(project, cluster), held=held)
    except ConfigError as e:  # a kubeconfig that does not load: its runs cannot start anyway
        log.warning("planning without autoscaler pools this pass: %s", e)
        return inventory
    except KubeError as e:
        log.warning("planning without autoscaler pools this pass: %s", e)
        if fit is not None and isinstance(e, KubeTemporaryError):
            fit.unreachable = e.message
        return inventory


def narrow_request(
    ctx: WorkerContext,
    run: Run,
    request: Request,
    inventory: GpuInventory,
    *,
    berth_nodes: Mapping[tuple[str, str], frozenset[str]],
    fit: PassFit | None = None,
    cluster: str | None = None,
) -> Request | Blocked:
    """``request`` limited to where the run's volumes and the node selector let it go.

    A run whose limits cannot be read now (the apiserver is away) waits for a
    later pass; the other runs of the pass are planned as usual.
    """
    fit = fit or PassFit()
    if fit.unreachable is not None:
        return Blocked(f"cannot read where the run may go: {fit.unreachable}", permanent=False)
    try:
        return _narrow(ctx, run, request, inventory, berth_nodes, fit, cluster)
    except ConfigError as e:
        return Blocked(f"cannot reach the run's cluster: {e}", permanent=False)
    except KubeError as e:
        if isinstance(e, KubeTemporaryError):
            fit.unreachable = e.message
        return Blocked(f"cannot read where the run may go: {e.message}", permanent=False)


def _narrow(
    ctx: WorkerContext,
    run: Run,
    request: Request,
    inventory: GpuInventory,
    berth_nodes: Mapping[tuple[str, str], frozenset[str]],
    fit: PassFit,
    name: str | None,
) -> Request | Blocked:
    cluster = ctx.clusters.for_project(run.project, name)
    allowed = request.allowed_nodes
    selector = cluster.backend.pod_settings().node_selector
    if selector:
        key = tuple(sorted(selector.items()))
        if key not in fit.selectors:
            fit.selectors[key] = selector_nodes(cluster, selector)
        pool_nodes = {n.name for n in inventory.nodes if autoscaling.is_pool_node(n.name)}
        matching = fit.selectors[key] | pool_nodes
        allowed = matching if allowed is None else allowed & matching
    names = mounted_volumes(run.configuration)
    if names:
        unread = [n for n in names if (run.project, n) not in fit.claims]
        if unread:  # one pod LIST for all of them
            states = claim_states(ctx.store, cluster, run.project, unread, berth_nodes=berth_nodes)
            found = {s.volume: s for s in states}
            for name in unread:
                fit.claims[(run.project, name)] = found.get(name)
        claims = [c for n in names if (c := fit.claims[(run.project, n)]) is not None]
        by_volumes = allowed_nodes_for_volumes(claims)
        if by_volumes is not None:
            narrowed = by_volumes if allowed is None else allowed & by_volumes
            if not narrowed:
                idle = [replace(c, used_on=frozenset(), pods=0) for c in claims]
                ever = allowed_nodes_for_volumes(idle)
                permanent = ever is not None and not (ever if allowed is None else allowed & ever)
                return Blocked(describe_volume_limits(claims), permanent=permanent)
            allowed = narrowed
        splitting = [c for c in claims if could_split(c)]
        for claim in splitting:  # every volume first: a held-out run takes no claim
            if fit.first_user.get((run.project, claim.volume), run.id) != run.id:
                return Blocked(
                    f"volume {claim.volume} ({','.join(sorted(claim.access_modes))}) goes"
                    " where the run queued before this one with it is placed",
                    permanent=False,
                )
        for claim in splitting:
            fit.first_user[(run.project, claim.volume)] = run.id
    if allowed == request.allowed_nodes:
        return request
    return replace(request, allowed_nodes=allowed)
