"""Beat's level-triggered safety net: whatever a lost message left behind.

Every few seconds: re-sync every job that holds or awaits a pod (a missed pod
event costs seconds, not a stuck run), re-send provisioning for jobs placed
but without a pod, and run a scheduling pass so pending runs never depend on
a single wake-up message.
"""

from __future__ import annotations

import time

from shared import tasks
from shared.records import RunStatus
from workers.context import WorkerContext

PROVISION_STUCK_S = 30.0  # a placed job with no pod after this gets its message again


def sweep(ctx: WorkerContext) -> None:
    store = ctx.store
    now = time.time()
    pending = False
    for run_id in store.active_run_ids():
        run = store.find_run(run_id)
        if run is None:
            continue
        for job in store.jobs_of(run):
            if job.status in (RunStatus.SUBMITTED, RunStatus.PENDING):
                pending = True
            elif job.status == RunStatus.PROVISIONING and job.pod_name is None:
                if now - job.updated_at > PROVISION_STUCK_S:
                    tasks.send(ctx.celery, tasks.PROVISION_JOB, job.id)
            elif job.status in (RunStatus.PROVISIONING, RunStatus.RUNNING):
                tasks.send(ctx.celery, tasks.SYNC_JOB, job.id)
            elif job.status == RunStatus.TERMINATING:
                tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job.id)
        if run.stop_requested and not run.status.is_finished:
            for job_id in run.job_ids:
                tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id)
    if pending:
        tasks.send(ctx.celery, tasks.SCHEDULE_RUN, "sweep")
