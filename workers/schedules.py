"""Starting scheduled runs at their cron times (see :mod:`shared.state.schedules`)."""

from __future__ import annotations

import logging
import time
import uuid

from shared.configuration.parse import configuration_from_stored
from shared.errors import ConflictError, NotFoundError
from shared.queueing.wake import wake_scheduler
from shared.state import schedules
from shared.state.jobs import jobs_for
from shared.state.records import Event, Run, RunStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def start_due_runs(ctx: WorkerContext, *, now: float | None = None) -> list[str]:
    """Start one run for each schedule whose latest cron time has come; their ids.

    Idempotent per tick: the tick is claimed before anything is made, so a second
    beat or a redelivered message finds it taken and does nothing.
    """
    now = time.time() if now is None else now
    started: list[str] = []
    for record in schedules.list_all(ctx.store):
        since = record.last_tick or record.created_at
        tick = schedules.due_tick(record.crons, since=since, now=now)
        if tick is None or not schedules.claim_tick(ctx.store, record, tick):
            continue
        run_id = _start(ctx, record, tick)
        # Moved on whatever happened, so a skipped tick is not tried again.
        schedules.put(ctx.store, record.model_copy(update={"last_tick": tick}))
        if run_id is not None:
            started.append(run_id)
    return started


def _start(ctx: WorkerContext, record: schedules.ScheduledRun, tick: float) -> str | None:
    """The run of ``record`` for ``tick``; None when its previous run still runs."""
    try:
        previous = ctx.store.run_by_name(record.project, record.name)
    except NotFoundError:
        previous = None
    if previous is not None and not previous.status.is_finished:
        when = _utc(tick)
        log.info("schedule %s: skipped %s, its run is still %s", record.name, when, previous.status)
        message = f"the start scheduled for {when} was skipped: this run was {previous.status}"
        ctx.store.append_event(previous.id, Event(at=time.time(), kind="info", message=message))
        return None
    conf = configuration_from_stored(record.configuration)
    run = Run(
        id=uuid.uuid4().hex,
        project=record.project,
        name=record.name,
        user=record.user,
        configuration=record.configuration,
        configuration_type=record.configuration_type,
        priority=record.priority,
        pod_security=record.pod_security,
        code=record.code,
    )
    jobs = jobs_for(run, conf)
    run.job_ids = [j.id for j in jobs]
    when = _utc(tick)
    event = Event(
        at=run.submitted_at,
        kind="status",
        status=RunStatus.SUBMITTED,
        message=f"submitted by its schedule for {when}",
    )
    try:
        ctx.store.create_run(run, jobs, event)
    except ConflictError:
        return None  # a run of the name appeared since the look above: that one runs
    wake_scheduler(ctx.store, ctx.celery, run.id)
    return run.id


def _utc(tick: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(tick))
