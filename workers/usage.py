"""Beat's usage sample: per project, GPUs in use and in all, and runs waiting."""

from __future__ import annotations

import logging
import time

from shared.errors import BerthError
from shared.policy import access
from shared.state import usage
from shared.state.inventory_store import load_inventory
from shared.state.records import RunStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def sample_usage(ctx: WorkerContext, *, now: float | None = None) -> None:
    """One sample per project; a project whose cluster cannot be read is skipped."""
    now = time.time() if now is None else now
    active = ctx.store.find_runs(ctx.store.active_run_ids())
    jobs = ctx.store.jobs_of_runs(active)
    for project in ctx.server.project_names():
        runs = [r for r in active if r.project == project]
        queued = sum(r.status in (RunStatus.PENDING, RunStatus.SUBMITTED) for r in runs)
        try:
            key = ctx.clusters.key_for(project)
            found = access.access_for(ctx.store, ctx.clusters, project, recheck_s=None)
            if found.mode != access.Mode.CLUSTER:
                continue
            inventory = load_inventory(ctx.store, ctx.clusters, project)
        except BerthError as e:
            log.info("no usage sample for %s: %s", project, e)
            continue
        held = sum(
            j.placement.gpus
            for r in active
            if ctx.clusters.key_for(r.project) == key
            for j in jobs.get(r.id, [])
            if j.placement is not None and not j.status.is_finished
        )
        used, total = usage.gpu_totals(inventory, held_by_berth=held)
        usage.record(ctx.store, project, at=now, used=used, total=total, queued=queued)
