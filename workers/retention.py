"""Retention: finished runs, their events and their output go ``logs.retention_days``
after they ended, as dstack keeps a run's logs for as long as the run exists.

Beat sends :func:`expire_runs` every ``RETENTION_EVERY_S``; each pass deletes at most
``_BATCH`` runs per project (oldest submitted first), so a first pass over a long
history never holds a worker for long, and the next pass goes on. The name of an
expired run answers "expired" (not "no such run") for another retention period.
"""

from __future__ import annotations

import logging
import time

from workers import teardown
from workers.context import WorkerContext

log = logging.getLogger(__name__)

_BATCH = 500
_DAY_S = 86400.0


def expire_runs(ctx: WorkerContext, *, now: float | None = None) -> int:
    """Purge finished runs older than the retention period; how many were purged."""
    now = time.time() if now is None else now
    days = ctx.settings.logs.retention_days
    cutoff = now - days * _DAY_S
    purged = 0
    for project in ctx.server.project_names():
        for run in ctx.store.older_runs(project, before=cutoff, count=_BATCH):
            if not run.status.is_finished or run.updated_at >= cutoff:
                continue
            reason = f"finished runs are kept {days:g} days (logs.retention_days)"
            teardown.purge_run(ctx, run.id)  # its objects, records and output
            ctx.store.mark_expired(run, reason=reason, ttl_s=int(days * _DAY_S))
            purged += 1
    if purged:
        log.info("expired %d finished runs", purged)
    return purged
