"""What the dashboard shows a user, as plain JSON: the GPU map, the queue, runs, usage.

Built from what the scheduler itself reads (the published inventory and Berth's
placements), so the page and the queue never disagree. A user sees only the
projects they belong to: GPUs that another project's runs hold on a shared
cluster show as "another project", never its run names.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from shared.clusters import ClusterRegistry
from shared.errors import BerthError
from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.placement.autoscaling import is_pool_node, pool_of
from shared.policy import access
from shared.queueing import positions
from shared.queueing.share import Ledger
from shared.state import usage
from shared.state.inventory_store import load_inventory
from shared.state.records import Job, Project, Run, RunStatus, User
from shared.state.store import Store

_RECENT = 20  # finished runs listed under the active ones
_POSITION = re.compile(r"position (\d+) of (\d+)")
OTHER_WORKLOAD = "other workload"
ANOTHER_PROJECT = "another project"


def visible_projects(store: Store, user: User) -> list[Project]:
    projects = [store.get_project(name) for name in store.project_names()]
    return [p for p in projects if p is not None and (user.is_admin or user.name in p.members)]


def dashboard_state(store: Store, clusters: ClusterRegistry, user: User) -> dict[str, Any]:
    """Everything the main page draws, for ``user``."""
    now = time.time()
    projects = visible_projects(store, user)
    names = {p.name for p in projects}
    placed = _placed_jobs(store, clusters)
    return {
        "user": user.name,
        "at": now,
        "projects": [_project(store, clusters, p.name, names, placed, now) for p in projects],
    }


def _project(
    store: Store,
    clusters: ClusterRegistry,
    project: str,
    visible: set[str],
    placed: dict[str, list[tuple[Run, Job]]],
    now: float,
) -> dict[str, Any]:
    runs = positions.shown(store, store.active_runs(project))
    jobs = store.jobs_of_runs(runs)
    try:
        seen = [_cluster_view(store, clusters, project, n) for n in clusters.names_of(project)]
    except BerthError as e:
        return {
            "name": project,
            "error": str(e),
            "nodes": [],
            "pools": [],
            "queue": [],
            "runs": [],
            "usage": [],
        }
    # The first cluster's mode and share speak for the project; nodes and pools are every
    # cluster's, each node with its cluster's name.
    mode, _, inventory = seen[0]
    nodes = [
        _node(n, placed.get(key, []), visible) | {"cluster": name}
        for name, (_, key, found) in zip(clusters.names_of(project), seen, strict=True)
        for n in (found.nodes if found else ())
    ]
    holders = placed.get(seen[0][1], [])
    finished, _ = store.page_runs(project, limit=_RECENT, keep=lambda r: r.status.is_finished)
    return {
        "name": project,
        "mode": mode.mode,
        "mode_reason": mode.reason,
        "nodes": [n for n in nodes if not is_pool_node(n["name"])],
        "pools": [
            pool
            for name, (_, key, _) in zip(clusters.names_of(project), seen, strict=True)
            for pool in _pools(clusters, project, name, placed.get(key, []), visible)
        ],
        "standing": _standing(runs, jobs) | {"share": _share(inventory, holders, project)},
        # The operator's per-model caps (server config); a namespace quota a run waits
        # for is named in its reason.
        "quotas": _quotas(clusters, project),
        "queue": _queue(runs, jobs),
        "runs": [_run(r, jobs.get(r.id, [])) for r in [*runs, *finished]],
        "usage": usage.samples(store, project, since=now - 3600),
    }


def _placed_jobs(store: Store, clusters: ClusterRegistry) -> dict[str, list[tuple[Run, Job]]]:
    """Per cluster key, every active Berth job with a placement, whatever its project."""
    runs = store.find_runs(store.active_run_ids())
    jobs = store.jobs_of_runs(runs)
    out: dict[str, list[tuple[Run, Job]]] = {}
    for run in runs:
        for job in jobs.get(run.id, []):
            if job.placement is None or not job.placement.gpus or job.status.is_finished:
                continue
            try:
                key = clusters.key_for(run.project, clusters.name_of(job))
            except BerthError:
                continue
            out.setdefault(key, []).append((run, job))
    return out


def _cluster_view(
    store: Store, clusters: ClusterRegistry, project: str, name: str
) -> tuple[access.Access, str, GpuInventory | None]:
    """The project's access, the key and the inventory (if readable) of cluster ``name``."""
    mode = access.access_for(store, clusters, project, recheck_s=None, cluster=name)
    key = clusters.key_for(project, name)
    cluster_mode = mode.mode == access.Mode.CLUSTER
    inventory = load_inventory(store, clusters, project, name) if cluster_mode else None
    return mode, key, inventory


def _node(node: NodeInventory, holders: list[tuple[Run, Job]], visible: set[str]) -> dict[str, Any]:
    groups = []
    for group in node.gpus:
        count = group.count
        users: list[str | None] = []
        for run, job in holders:
            p = job.placement
            if p is not None and p.node == node.name and p.gpu_resource == group.resource:
                who = f"{run.name} ({run.user})" if run.project in visible else ANOTHER_PROJECT
                users += [who] * p.gpus
        foreign = max(0, count - node.free_units(group))
        users += [OTHER_WORKLOAD] * foreign
        users = users[:count] + [None] * max(0, count - len(users))
        groups.append(
            {
                "name": group.name or group.resource,
                "memory_gib": round(group.memory_mib / 1024) if group.memory_mib else None,
                "resource": group.resource,
                "gpus": users,
            }
        )
    return {
        "name": node.name,
        "pool": node.pool,
        "schedulable": node.schedulable,
        "reasons": list(node.reasons),
        "groups": groups,
    }


def _pools(
    clusters: ClusterRegistry,
    project: str,
    name: str,
    holders: list[tuple[Run, Job]],
    visible: set[str],
) -> list[dict[str, Any]]:
    """The autoscaler pools nodes may still come from, apart from the nodes that exist,
    with the runs placed on nodes a pool has yet to add."""
    waiting: dict[str, list[str]] = {}
    for run, job in holders:
        if job.placement is not None and is_pool_node(job.placement.node):
            who = run.name if run.project in visible else ANOTHER_PROJECT
            waiting.setdefault(pool_of(job.placement.node) or "?", []).append(who)
    pools = clusters.server.backend_for(project, name).node_pools
    return [
        {
            "pool": pool.name,
            "shape": f"{pool.gpus_per_node}x {pool.gpu}" if pool.gpu else "CPU only",
            "max_nodes": pool.max_nodes,
            "waiting": waiting.get(pool.name, []),
        }
        for pool in pools
    ]


def _share(
    inventory: GpuInventory | None, holders: list[tuple[Run, Job]], project: str
) -> float | None:
    """The project's dominant share of the cluster, as the queue's fairness reads it
    (shared.queueing.share): the next free capacity goes to the smallest."""
    if inventory is None:
        return None
    held = [(run.project, job.placement) for run, job in holders if job.placement is not None]
    return round(Ledger.of(inventory, held).dominant_share(project), 4)


def _quotas(clusters: ClusterRegistry, project: str) -> dict[str, int]:
    found = next((p for p in clusters.server.projects if p.name == project), None)
    return dict(found.quotas or {}) if found is not None else {}


def _standing(runs: list[Run], jobs: dict[str, list[Job]]) -> dict[str, int]:
    """The project's share right now: GPUs its runs hold, runs running and waiting."""
    held = sum(
        j.placement.gpus
        for r in runs
        for j in jobs.get(r.id, [])
        if j.placement is not None and not j.status.is_finished
    )
    counts = Counter(r.status for r in runs)
    return {
        "gpus_held": held,
        "running": counts[RunStatus.RUNNING],
        "waiting": counts[RunStatus.PENDING] + counts[RunStatus.SUBMITTED],
    }


def _queue(runs: list[Run], jobs: dict[str, list[Job]]) -> list[dict[str, Any]]:
    """Waiting runs in queue order; a gang (multi-node task) is one entry."""
    waiting = [r for r in runs if r.status in (RunStatus.PENDING, RunStatus.SUBMITTED)]
    entries = []
    for run in waiting:
        found = _POSITION.search(run.reason)
        entries.append(
            {
                "name": run.name,
                "user": run.user,
                "priority": run.priority,
                "position": int(found.group(1)) if found else None,
                "of": int(found.group(2)) if found else None,
                "nodes": len(jobs.get(run.id, [])) or 1,
                "gpu": _gpu_ask(run),
                "reason": run.reason or "submitted: waiting for the scheduler",
                "submitted_at": run.submitted_at,
            }
        )
    return sorted(entries, key=lambda e: (e["position"] or 10**9, e["submitted_at"]))


def _run(run: Run, jobs: list[Job]) -> dict[str, Any]:
    nodes = sorted({j.placement.node for j in jobs if j.placement is not None})
    return {
        "name": run.name,
        "user": run.user,
        "type": run.configuration_type,
        "status": run.status,
        "reason": run.reason,
        "nodes": nodes,
        "gpus": sum(j.placement.gpus for j in jobs if j.placement is not None),
        "submitted_at": run.submitted_at,
    }


def _gpu_ask(run: Run) -> str:
    """The GPUs a run asks for, as a person writes them: ``1x V100``, ``2..8x H100/A100``."""
    resources = run.configuration.get("resources") or {}
    gpu = resources.get("gpu") if isinstance(resources, dict) else None
    if not isinstance(gpu, dict):
        return "" if gpu is None else str(gpu)
    names = "/".join(gpu.get("name") or []) or "GPU"
    count = gpu.get("count") or {}
    low, high = count.get("min"), count.get("max")
    amount = f"{low}" if low == high else f"{low or 0}..{high or ''}"
    return f"{amount}x {names}"
