"""Sending a placed run back to the queue, and stopping one whose time is up.

**Requeue** is the state machine's one deliberate rewind besides an
unschedulable pod (:mod:`shared.state.lifecycle`): a retried failure, or a gang that
did not become Running in time, returns *every* job of the run to ``pending``
without a placement, in one compare-and-set write of the run and all its jobs.
The order matters:

1. records first, marked "cleaning up" so the scheduler leaves the run alone:
   a sibling job's late sync that finds its pod gone then sees a pending job
   and does nothing, instead of failing the run;
2. then the old pods are deleted (grace 0), so a new pod, which has the same
   deterministic name, is never confused with an old one;
3. then the mark is cleared and a pass is asked for.

A verdict about a pod is applied only if the job is still the version it was
judged at, so a stale sync cannot requeue a run twice.
"""

from __future__ import annotations

import enum
import time

from shared import tasks
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError
from shared.queueing import keys
from shared.queueing.commit import CONFLICT, Change, Writer
from shared.queueing.limits import limits_of, may_retry
from shared.queueing.wake import wake_scheduler
from shared.state.records import Event, Job, Run, RunStatus
from workers import teardown
from workers.context import WorkerContext

_CAS_ATTEMPTS = 10
_STOP_ATTEMPTS = 3  # a stop for a limit: each a read and a compare-and-set; conflicts are brief


def retry_failed_job(ctx: WorkerContext, job: Job, *, event: str, reason: str) -> bool:
    """Requeue the run of ``job`` if its retry policy covers ``event``.

    True when the failure is dealt with: the run was requeued, or ``job`` moved on
    since it was read (another delivery requeued it first), so the verdict is stale
    and must not be applied either. False: fail the job as usual.
    """
    run = ctx.store.get_run(job.run_id)
    try:
        limits = limits_of(configuration_from_stored(run.configuration))
    except ConfigError:
        return False
    if not may_retry(limits, event, submitted_at=run.submitted_at, now=time.time()):
        return False
    outcome = requeue_run(ctx, run.id, f"retrying after {event} ({reason})", seen=job)
    return outcome is not RequeueOutcome.GONE


class RequeueOutcome(enum.Enum):
    REQUEUED = "requeued"
    STALE = "stale"
    """The job changed since ``seen`` was read: somebody else acted on it."""
    GONE = "gone"
    """The run finished or is being stopped: nothing to requeue."""


def requeue_run(
    ctx: WorkerContext, run_id: str, reason: str, *, seen: Job | None = None
) -> RequeueOutcome:
    """Every job of the run back to pending, unless the run moved on meanwhile.

    ``seen`` is the job a pod verdict was computed for: if it changed since,
    the verdict is stale and nothing happens.
    """
    store = ctx.store
    writer = Writer(store)
    for _ in range(_CAS_ATTEMPTS):
        run = store.find_run(run_id)
        if run is None or run.status.is_finished or run.stop_requested:
            return RequeueOutcome.GONE
        jobs = store.jobs_of(run)
        if seen is not None:
            current = next((j for j in jobs if j.id == seen.id), None)
            if current is None or current.version != seen.version:
                return RequeueOutcome.STALE
        if _write(writer, run, jobs, reason) != CONFLICT:
            break
    else:
        return RequeueOutcome.STALE
    for job in jobs:
        # The records read before the write: they still say where each old pod is.
        teardown.delete_pods(ctx, job)
    writer.write(Change(run=None, run_id=run_id, cleanup_done=True))
    wake_scheduler(ctx.store, ctx.celery, run_id)
    return RequeueOutcome.REQUEUED


def stop_for_limit(ctx: WorkerContext, run: Run, jobs: list[Job], reason: str) -> bool:
    """Stop a run that ran out of time, with ``reason`` kept on the run and its jobs.

    Another writer may have moved the run or a job since they were read (a pod's
    readiness, a sweep): the verdict still holds while the run keeps the status it was
    judged in, so the records are read again and the stop written over them, rather
    than left to the next look a minute later. Stopped, ended or requeued meanwhile:
    nothing to do.
    """
    judged = run.status
    for _ in range(_STOP_ATTEMPTS):
        if _write_stop(ctx, run, jobs, reason) > 0:
            for job in jobs:
                tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job.id)
            return True
        fresh = ctx.store.find_run(run.id)
        if fresh is None or fresh.stop_requested or fresh.status != judged:
            return False
        run, jobs = fresh, ctx.store.jobs_of(fresh)
    return False  # still moving after every attempt: the next look tries again


def _write_stop(ctx: WorkerContext, run: Run, jobs: list[Job], reason: str) -> int:
    new_run = run.model_copy(
        update={"stop_requested": True, "status": RunStatus.TERMINATING, "reason": reason}
    )
    stopping = [
        j.model_copy(update={"status": RunStatus.TERMINATING, "reason": reason})
        for j in jobs
        if not j.status.is_finished and j.status != RunStatus.TERMINATING
    ]
    event = Event(
        at=time.time(), kind="status", status=RunStatus.TERMINATING, message=f"stopping: {reason}"
    )
    return Writer(ctx.store).write(Change(run=new_run, jobs=stopping, events=[event]))


def _write(writer: Writer, run: Run, jobs: list[Job], reason: str) -> int:
    now = time.time()
    attempts = keys.timestamps(writer.store, keys.ATTEMPTS, [run.id]).get(run.id, 0.0)
    text = f"requeued (attempt {int(attempts) + 2}): {reason}"
    reset = [
        j.model_copy(
            update={
                "status": RunStatus.PENDING,
                "reason": text,
                "placement": None,
                "pod_name": None,
                "pod_ip": None,
                "exit_code": None,
                "ready": None,
                "attempt": j.attempt + 1,
            }
        )
        for j in jobs
        if not j.retired  # replicas a service's scaling retired stay retired
    ]
    new_run = run.model_copy(update={"status": RunStatus.PENDING, "reason": text})
    event = Event(at=now, kind="status", status=RunStatus.PENDING, message=text)
    change = Change(
        run=new_run,
        jobs=reset,
        events=[event],
        forget_admission=True,
        attempt=True,
        cleanup_at=now,
    )
    return writer.write(change)
