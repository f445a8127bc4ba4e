"""Beat's usage sample: per project, GPUs in use and in all, and runs waiting."""

from __future__ import annotations

import logging
import time

from shared.errors import BerthError
from shared.policy import access
from shared.state import usage
from shared.state.inventory_store import load_inventory
from shared.state.records import Job, Run, RunStatus
from workers.context import WorkerContext
from workers.scheduling import record_cache

log = logging.getLogger(__name__)


def sample_usage(ctx: WorkerContext, *, now: float | None = None) -> None:
    """One sample per project; a project whose cluster cannot be read is skipped."""
    now = time.time() if now is None else now
    # The scheduler's record cache: a version check per active record, not a parse of
    # each (10,000 waiting runs read whole each sample were a worker's steady load).
    view = record_cache(ctx.store).load(ctx.store)
    active, jobs = view.runs, view.jobs
    for project in ctx.server.project_names():
        runs = [r for r in active if r.project == project]
        queued = sum(r.status in (RunStatus.PENDING, RunStatus.SUBMITTED) for r in runs)
        try:
            sums = [
                _cluster_usage(ctx, project, name, active, jobs)
                for name in ctx.clusters.names_of(project)
            ]
        except BerthError as e:
            log.info("no usage sample for %s: %s", project, e)
            continue
        counted = [s for s in sums if s is not None]
        if not counted:
            continue  # no cluster whose nodes Berth may read
        used, total = sum(s[0] for s in counted), sum(s[1] for s in counted)
        usage.record(ctx.store, project, at=now, used=used, total=total, queued=queued)


def _cluster_usage(
    ctx: WorkerContext, project: str, name: str, active: list[Run], jobs: dict[str, list[Job]]
) -> tuple[int, int] | None:
    """GPUs used and in all of ``project``'s cluster ``name``; None if its nodes cannot be read."""
    key = ctx.clusters.key_for(project, name)
    found = access.access_for(ctx.store, ctx.clusters, project, recheck_s=None, cluster=name)
    if found.mode != access.Mode.CLUSTER:
        return None
    inventory = load_inventory(ctx.store, ctx.clusters, project, name)
    held = sum(
        j.placement.gpus
        for r in active
        for j in jobs.get(r.id, [])
        if j.placement is not None
        and not j.status.is_finished
        and ctx.clusters.key_for(r.project, ctx.clusters.name_of(j)) == key
    )
    return usage.gpu_totals(inventory, held_by_berth=held)
