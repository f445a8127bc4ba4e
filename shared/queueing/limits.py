"""Time rules of a run, as pure functions: retry, ``max_duration``, inactivity, gang readiness.

- **Retry** (``retry: {on_events, duration}``): a run is requeued instead of
  failing when its failure is one of ``on_events`` and ``duration`` has not
  passed since the run was submitted. ``error`` is a non-zero exit code;
  ``interruption`` is a pod that went away without the user asking (deleted,
  evicted, node lost or shut down). Berth always queues a run that does not fit
  now, so ``no-capacity`` does not decide *whether* it waits, it bounds *how
  long*: with ``no-capacity`` listed, a run still waiting when ``duration`` has
  passed since submission fails with "no capacity". An impossible request fails
  at once either way.
- **max_duration** counts from the run's latest placement: time in the queue is
  not spent from it, and a requeued run gets it anew (as dstack counts per
  submission).
- **inactivity_duration** (dev environments): counts from the later of the
  latest placement and the last recorded activity
  (:func:`shared.queueing.keys.record_activity`), which ``workers/activity.py``
  records while a user has an SSH session open in the pod (``ssh RUN``, an IDE,
  a port forward). A pod that cannot be asked records nothing, and the rule then
  acts as a time limit from the start.
- **Gang readiness**: every pod of a multi-node run must be Running within
  ``scheduling.gang_ready_timeout_s`` of its placement, or the whole run goes
  back to the queue (Kueue's ``waitForPodsReady``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.state.records import Job, RunStatus

ERROR, INTERRUPTION, NO_CAPACITY = "error", "interruption", "no-capacity"


@dataclass(frozen=True)
class Limits:
    retry_on: frozenset[str] = frozenset()
    retry_duration_s: int | None = None
    max_duration_s: int | None = None
    inactivity_s: int | None = None


def limits_of(conf: Any) -> Limits:
    retry = getattr(conf, "retry", None)
    return Limits(
        retry_on=frozenset(retry.on_events) if retry is not None else frozenset(),
        retry_duration_s=retry.duration if retry is not None else None,
        max_duration_s=getattr(conf, "max_duration", None),
        inactivity_s=getattr(conf, "inactivity_duration", None),
    )


def may_retry(limits: Limits, event: str, *, submitted_at: float, now: float) -> bool:
    """Whether a failure of kind ``event`` requeues the run instead of failing it."""
    if event not in limits.retry_on or limits.retry_duration_s is None:
        return False
    return now - submitted_at <= limits.retry_duration_s


def waited_too_long(limits: Limits, *, submitted_at: float, now: float) -> str | None:
    """Why a queued run now fails for lack of capacity, or None while it may wait."""
    if NO_CAPACITY not in limits.retry_on or limits.retry_duration_s is None:
        return None
    if now - submitted_at <= limits.retry_duration_s:
        return None
    return f"no capacity within the retry duration ({limits.retry_duration_s}s)"


def time_is_up(
    limits: Limits,
    *,
    kind: str,
    admitted_at: float | None,
    active_at: float | None,
    now: float,
) -> str | None:
    """Why a placed run must stop now (max_duration, inactivity), or None."""
    if admitted_at is None:
        return None
    if limits.max_duration_s is not None and now - admitted_at > limits.max_duration_s:
        return f"max_duration exceeded ({limits.max_duration_s}s)"
    if kind == "dev-environment" and limits.inactivity_s is not None:
        since = max(admitted_at, active_at or 0.0)
        if now - since > limits.inactivity_s:
            return f"inactive for longer than inactivity_duration ({limits.inactivity_s}s)"
    return None


def gang_not_ready(
    jobs: list[Job], *, admitted_at: float | None, now: float, timeout_s: float
) -> str | None:
    """Why a multi-node run goes back to the queue, or None while it may keep its nodes.

    A gang is all or nothing: a member that lost its placement (back to pending
    while the others hold) sends the whole run back at once; a member not
    Running ``timeout_s`` after placement does too.
    """
    if len(jobs) < 2 or jobs[0].jobs_in_run < 2:
        return None
    queued = [j for j in jobs if j.status in (RunStatus.SUBMITTED, RunStatus.PENDING)]
    holding = [j for j in jobs if j.status in (RunStatus.PROVISIONING, RunStatus.RUNNING)]
    if queued and holding:
        return f"job {queued[0].job_num} of the gang lost its placement ({queued[0].reason})"
    starting = [j for j in jobs if j.status == RunStatus.PROVISIONING]
    if not starting or admitted_at is None or now - admitted_at <= timeout_s:
        return None
    return f"gang not ready: job {starting[0].job_num} not Running within {timeout_s:g}s"
