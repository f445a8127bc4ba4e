"""A provisioning job's wait, shown on the job and on its run (``berth ps``).

Shared by the two waits a placed pod can have: for the autoscaler to add its node
(:mod:`workers.node_pools`) and for the kube-scheduler to place it in namespace-only
mode (:mod:`workers.scheduler_placement`). ``replaces`` says which run reason the
caller may overwrite, so one wait never erases another's (or a limit's) reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.state.records import Event, RunStatus
from workers.context import WorkerContext

_CAS_ATTEMPTS = 10


def record_waiting(
    ctx: WorkerContext, job_id: str, reason: str, *, replaces: Callable[[str], bool]
) -> None:
    """The job waits for ``reason`` (an event when it changes), and so does its run."""
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.status != RunStatus.PROVISIONING or job.reason == reason:
            break
        job.reason = reason
        event = Event(at=time.time(), kind="info", job=job.job_num, message=reason)
        if ctx.store.save_job(job, event):
            break
    set_run_reason(ctx, job.run_id, reason, replaces=replaces)


def set_run_reason(
    ctx: WorkerContext, run_id: str, reason: str, *, replaces: Callable[[str], bool]
) -> None:
    """Show the wait on the run too, while it is provisioning."""
    for _ in range(_CAS_ATTEMPTS):
        run = ctx.store.get_run(run_id)
        if run.status != RunStatus.PROVISIONING or run.reason == reason:
            return
        if not replaces(run.reason):
            return  # someone else's reason
        run.reason = reason
        if ctx.store.save_run(run):
            return
