"""Beat's level-triggered safety net, and the queue's clocks.

Every few seconds, over every active run (read through the scheduler's record
cache, so 10,000 waiting runs cost a version check each, not a parse):

- re-sync every job that holds or awaits a pod (a missed pod event costs
  seconds, not a stuck run), re-send provisioning for jobs placed but without
  a pod, re-send teardown for stopping jobs;
- send a gang back to the queue when a member lost its placement or its pods
  are not all Running within ``scheduling.gang_ready_timeout_s``;
- stop runs past ``max_duration`` or, for dev environments, past
  ``inactivity_duration`` (see :mod:`shared.queueing.limits`);
- run a scheduling pass if anything waits, so pending runs never depend on a
  single wake-up message; and forget the queue's notes about finished runs.
"""

from __future__ import annotations

import logging
import time

from shared import tasks
from shared.queueing import keys
from shared.queueing.limits import gang_not_ready, time_is_up
from shared.records import Job, Run, RunStatus
from workers import requeue
from workers.context import WorkerContext
from workers.scheduling import record_cache

log = logging.getLogger(__name__)

PROVISION_STUCK_S = 30.0  # a placed job with no pod after this gets its message again


def sweep(ctx: WorkerContext) -> None:
    store = ctx.store
    now = time.time()
    cache = record_cache(store)
    view = cache.load(store)
    ids = [run.id for run in view.runs]
    admitted = keys.timestamps(store, keys.ADMITTED)
    activity = keys.timestamps(store, keys.ACTIVITY)
    pending = False
    for run in view.runs:
        jobs = view.jobs[run.id]
        pending |= any(j.status in (RunStatus.SUBMITTED, RunStatus.PENDING) for j in jobs)
        if not run.stop_requested and _enforce_limits(
            ctx, run, jobs, admitted.get(run.id), activity.get(run.id), now
        ):
            continue
        _resend(ctx, run, jobs, now)
    if pending:
        tasks.send(ctx.celery, tasks.SCHEDULE_RUN, "sweep")
    keys.forget(store, keys.known_runs(store) - set(ids))


def _enforce_limits(
    ctx: WorkerContext,
    run: Run,
    jobs: list[Job],
    admitted_at: float | None,
    active_at: float | None,
    now: float,
) -> bool:
    """Requeue or stop ``run`` if one of its clocks ran out; True if it did."""
    timeout = ctx.settings.scheduling.gang_ready_timeout_s
    why = gang_not_ready(jobs, admitted_at=admitted_at, now=now, timeout_s=timeout)
    if why is not None:
        log.info("run %s goes back to the queue: %s", run.name, why)
        requeue.requeue_run(ctx, run.id, why)
        return True
    if run.status not in (RunStatus.PROVISIONING, RunStatus.RUNNING):
        return False
    limits = record_cache(ctx.store).facts(run).limits
    why = time_is_up(
        limits, kind=run.configuration_type, admitted_at=admitted_at, active_at=active_at, now=now
    )
    if why is None:
        return False
    log.info("stopping run %s: %s", run.name, why)
    return requeue.stop_for_limit(ctx, run, jobs, why)


def _resend(ctx: WorkerContext, run: Run, jobs: list[Job], now: float) -> None:
    for job in jobs:
        if job.status == RunStatus.PROVISIONING and job.pod_name is None:
            if now - job.updated_at > PROVISION_STUCK_S:
                tasks.send(ctx.celery, tasks.PROVISION_JOB, job.id)
        elif job.status in (RunStatus.PROVISIONING, RunStatus.RUNNING):
            tasks.send(ctx.celery, tasks.SYNC_JOB, job.id)
        elif job.status == RunStatus.TERMINATING:
            tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job.id)
    if run.stop_requested and not run.status.is_finished:
        for job_id in run.job_ids:
            tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id)
