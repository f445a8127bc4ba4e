"""Fleet ``idle_duration``: a fleet's autoscaled nodes stay until idle that long.

dstack terminates a fleet's instances once idle for ``idle_duration`` and keeps
``nodes.min`` of them. On Kubernetes the autoscaler removes nodes, by its own
clock (cluster-autoscaler's ``scale-down-unneeded-time``, 10 min by default;
Karpenter's consolidation), so a GPU node a team wanted warm for the next run is
gone before the hour they asked for. Here, for each fleet with ``idle_duration``,
every node of the fleet that belongs to one of the backend's autoscaling
``node_pools`` is kept from scale-down, with the annotations both autoscalers
honour, while it runs Berth's jobs and until it has been idle for
``idle_duration`` (``off``: always); ``nodes.min`` of them are kept however long
they idle. After that the annotations go and the autoscaler's own rules decide.
``nodes.target`` (dstack: how many instances the fleet starts with) bounds how
many of its idle nodes are kept when Berth first sees the fleet; without it, all.
Later, only a node that ran Berth's jobs starts an idle clock: a node the
autoscaler added for someone else is not the fleet's to keep.

Only what Berth added is ever removed: a node an operator annotated already
keeps the operator's annotation (:data:`ADDED` records which keys were
Berth's). Nodes Berth keeps carry the label :data:`KEPT`, so the nodes to let go
are found with one label-selected LIST. Idle clocks, and how many nodes
Berth keeps, live in one blob per cluster; a cluster with neither fleets that
ask nor kept nodes costs no Kubernetes call. Beat runs :func:`keep_fleets_warm`
every 30 s (``WARMTH_EVERY_S``); running it twice changes nothing the first run
did not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.clusters import Cluster
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import configuration_from_stored
from shared.errors import BerthError, KubeForbidden
from shared.placement.fleets import fleet_nodes
from shared.placement.placement_facts import selector_nodes
from shared.placement.placements import active_runs, reserved
from shared.policy import access
from shared.state.inventory_store import load_inventory
from shared.state.store import Store
from workers.context import WorkerContext

log = logging.getLogger(__name__)

KEPT = "berth.dev/kept-warm"
"""Label on a node Berth keeps from scale-down; its value is always ``"true"``."""
OWNER = "berth.dev/kept-for"
"""Annotation: the ``project/fleet`` that keeps the node."""
ADDED = "berth.dev/kept-warm-added"
"""Annotation: the comma-separated keep annotations Berth added (and may remove)."""
KEEP_ANNOTATIONS = {
    "cluster-autoscaler.kubernetes.io/scale-down-disabled": "true",
    "karpenter.sh/do-not-disrupt": "true",
}


@dataclass(frozen=True)
class FleetNodes:
    owner: str
    """``project/fleet``."""
    nodes: tuple[str, ...]
    """The fleet's nodes in autoscaling pools, in name order."""
    idle_s: int | None
    """``idle_duration`` in seconds; None for ``off`` (kept however long it idles)."""
    min_nodes: int
    initial: int | None = None
    """``nodes.target``: idle nodes kept from the fleet's first sight; None: all."""


def keep_fleets_warm(ctx: WorkerContext, *, now: float | None = None) -> None:
    """One pass over every cluster whose projects have fleets with ``idle_duration``."""
    now = time.time() if now is None else now
    by_cluster: dict[str, tuple[Cluster, list[FleetNodes]]] = {}
    for project, name in _project_clusters(ctx):
        try:
            found = access.access_for(
                ctx.store, ctx.clusters, project, recheck_s=None, cluster=name
            )
            if found.mode != access.Mode.CLUSTER:
                continue  # fleets need node reads (workers/scheduling.py says so to runs)
            cluster = ctx.clusters.for_project(project, name)
            fleets = _fleets(ctx, cluster, project)
        except BerthError as e:
            log.info("cannot keep fleet nodes of %s warm in %s now: %s", project, name, e)
            continue
        key = cluster.backend.cluster_key()
        by_cluster.setdefault(key, (cluster, []))[1].extend(fleets)
    for key, (cluster, fleets) in by_cluster.items():
        try:
            _keep_in(ctx.store, key, cluster, fleets, now=now)
        except KubeForbidden as e:
            log.warning("may not annotate nodes to keep fleets warm (RBAC: patch nodes): %s", e)
        except BerthError as e:
            log.info("keeping fleet nodes warm in cluster %s failed, next time: %s", key, e)


def decide(
    fleets: Iterable[FleetNodes],
    busy: set[str],
    idle_since: Mapping[str, float],
    *,
    now: float,
    seen: frozenset[str] = frozenset(),
) -> tuple[dict[str, str], dict[str, float]]:
    """Node -> owner to keep, and the idle clocks after this look. Pure.

    A busy node is kept and its clock set to now (idle since it was last busy); an
    idle one with a clock is kept until idle for the fleet's ``idle_s``, and the
    first ``min_nodes`` (busy ones counting) always. An idle node gets a clock only
    when a fleet not in ``seen`` (owners looked at before) is first looked at: its
    first ``initial`` nodes, busy ones counting.
    """
    keep: dict[str, str] = {}
    clocks: dict[str, float] = {}
    for fleet in fleets:
        busy_here = sum(n in busy for n in fleet.nodes)
        spare = max(0, fleet.min_nodes - busy_here)
        seeds = 0
        if fleet.owner not in seen:
            seeds = len(fleet.nodes) if fleet.initial is None else fleet.initial - busy_here
        for node in fleet.nodes:
            if node in busy:
                keep.setdefault(node, fleet.owner)
                clocks[node] = now
                continue
            since = clocks.get(node, idle_since.get(node))
            if since is None and seeds > 0:
                seeds -= 1
                since = now
            if since is not None:
                clocks.setdefault(node, since)
            if spare > 0:
                spare -= 1
                keep.setdefault(node, fleet.owner)
            elif since is not None and (fleet.idle_s is None or now - since < fleet.idle_s):
                keep.setdefault(node, fleet.owner)
    return keep, clocks


def _project_clusters(ctx: WorkerContext) -> list[tuple[str, str]]:
    """(project, cluster name) of every cluster of every project with a backend."""
    out = []
    for project in ctx.server.project_names():
        try:
            out += [(project, name) for name in ctx.clusters.names_of(project)]
        except BerthError:
            continue  # a project without a backend has no fleets to keep
    return out


def _fleets(ctx: WorkerContext, cluster: Cluster, project: str) -> list[FleetNodes]:
    pools = cluster.backend.node_pools
    wanted = [
        (fleet.name, conf)
        for fleet in ctx.store.list_fleets(project)
        if isinstance(conf := configuration_from_stored(fleet.configuration), FleetConfiguration)
        and conf.idle_duration is not None
    ]
    if not pools or not wanted:
        return []
    in_pools = frozenset().union(*(selector_nodes(cluster, pool.labels) for pool in pools))
    inventory = load_inventory(ctx.store, ctx.clusters, project, cluster.name)
    found = []
    for name, conf in wanted:
        nodes = tuple(n.name for n in fleet_nodes(inventory, conf) if n.name in in_pools)
        idle = conf.idle_duration
        found.append(
            FleetNodes(
                owner=f"{project}/{name}",
                nodes=nodes,
                idle_s=None if idle == "off" else int(idle or 0),
                min_nodes=conf.nodes.min or 0,
                initial=conf.nodes.target,
            )
        )
    return found


def _keep_in(
    store: Store, key: str, cluster: Cluster, fleets: list[FleetNodes], *, now: float
) -> None:
    blob = f"fleet-warmth:{key}"
    last = store.get_blob(blob) or {}
    if not fleets and not last.get("kept"):
        return  # nothing wanted, nothing Berth keeps: no node read every 30 s for it
    idle_since = {k: float(v) for k, v in (last.get("idle_since") or {}).items()}
    seen = frozenset(last.get("seen") or ())
    keep, clocks = decide(fleets, _busy_nodes(store), idle_since, now=now, seen=seen)
    k = cluster.kube
    kept_now = {
        n.metadata.name: n.metadata.annotations or {}
        for n in k.call(k.core.list_node, label_selector=f"{KEPT}=true").items
    }
    for node, owner in keep.items():
        if kept_now.get(node, {}).get(OWNER) != owner:
            _keep(cluster, node, owner)
    for node, marks in kept_now.items():
        if node not in keep:
            _let_go(cluster, node, marks)
    owners = sorted({f.owner for f in fleets})
    store.put_blob(blob, {"idle_since": clocks, "kept": len(keep), "seen": owners})


def _busy_nodes(store: Store) -> set[str]:
    """The nodes Berth's jobs hold now, as the scheduler counts them."""
    return set(reserved(job for _, jobs in active_runs(store) for job in jobs))


def _keep(cluster: Cluster, node: str, owner: str) -> None:
    k = cluster.kube
    current = k.call(k.core.read_node, node).metadata
    present = current.annotations or {}
    ours = (current.labels or {}).get(KEPT) == "true"
    previously = set(filter(None, present.get(ADDED, "").split(","))) if ours else set()
    added = sorted(previously | {a for a in KEEP_ANNOTATIONS if a not in present})
    annotations = {a: KEEP_ANNOTATIONS[a] for a in added} | {OWNER: owner, ADDED: ",".join(added)}
    body = {"metadata": {"labels": {KEPT: "true"}, "annotations": annotations}}
    k.call(k.core.patch_node, node, body)
    log.info("keeping node %s from scale-down for fleet %s", node, owner)


def _let_go(cluster: Cluster, node: str, annotations: Mapping[str, str]) -> None:
    k = cluster.kube
    added = [a for a in annotations.get(ADDED, "").split(",") if a in KEEP_ANNOTATIONS]
    removed: dict[str, None] = {a: None for a in (*added, OWNER, ADDED)}
    body = {"metadata": {"labels": {KEPT: None}, "annotations": removed}}
    k.call(k.core.patch_node, node, body)
    log.info("node %s is idle past its fleet's idle_duration: the autoscaler may remove it", node)
