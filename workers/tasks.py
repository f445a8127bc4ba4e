"""Every Celery task of Berth, each a thin wrapper over one plain function.

Names are explicit and stable (Flower shows them; renaming one would strand
messages already queued). Arguments are ids only.
"""

from __future__ import annotations

from shared import tasks as names
from workers import (
    activity,
    fleet_warmth,
    gpu_utilization,
    orphans,
    provision_batch,
    provisioning,
    retention,
    schedules,
    scheduling,
    service_routers,
    service_scaling,
    sweeps,
    teardown,
    teardown_drain,
    usage,
)
from workers.celery_app import berth_task
from workers.context import context
from workers.scheduling_trigger import request_pass


@berth_task(names.SCHEDULE_RUN)
def schedule_run(run_id: str) -> None:
    # A pass covers every pending run; run_id only says why it was woken.
    ctx = context()
    if run_id == "sweep":  # only beat's wake-ups coalesce (workers/sweeps.py)
        ctx.store.unmark_queued(names.SCHEDULE_RUN, run_id)
    settings = ctx.settings.scheduling
    request_pass(
        ctx.store,
        lambda: scheduling.schedule_pass(ctx),
        share=settings.pass_share,
        gather_max_s=settings.gather_max_s,
    )


@berth_task(names.PROVISION_JOB)
def provision_job(job_id: str) -> None:
    ctx = context()
    ctx.store.unmark_queued(names.PROVISION_JOB, job_id)
    provisioning.provision_job(ctx, job_id)


@berth_task(names.PROVISION_JOBS)
def provision_jobs(*job_ids: str) -> None:
    # The jobs one scheduling pass placed (workers/scheduling.py), provisioned together.
    provision_batch.provision_jobs(context(), list(job_ids))


@berth_task(names.SYNC_JOB)
def sync_job(job_id: str) -> None:
    ctx = context()
    ctx.store.unmark_queued(names.SYNC_JOB, job_id)
    provisioning.sync_job(ctx, job_id)


@berth_task(names.TEARDOWN_JOB)
def teardown_job(job_id: str) -> None:
    ctx = context()
    ctx.store.unmark_queued(names.TEARDOWN_JOB, job_id)
    teardown.teardown_job(ctx, job_id)


@berth_task(names.TEARDOWN_PENDING)
def teardown_pending(reason: str) -> None:
    # The jobs stops asked to tear down (shared/queueing/teardowns.py), in batches.
    ctx = context()
    ctx.store.unmark_queued(names.TEARDOWN_PENDING, reason)
    teardown_drain.drain(ctx)


@berth_task(names.TEARDOWN_POD)
def teardown_pod(job_id: str) -> None:
    teardown.teardown_pod(context(), job_id)


@berth_task(names.PURGE_RUN)
def purge_run(run_id: str) -> None:
    teardown.purge_run(context(), run_id)


@berth_task(names.SWEEP)
def sweep() -> None:
    sweeps.sweep(context())


@berth_task(names.START_SCHEDULED_RUNS)
def start_scheduled_runs() -> None:
    schedules.start_due_runs(context())


@berth_task(names.SCALE_SERVICES)
def scale_services() -> None:
    service_scaling.scale_services(context())


@berth_task(names.CHECK_UTILIZATION)
def check_utilization() -> None:
    gpu_utilization.check_utilization(context())


@berth_task(names.SYNC_ROUTERS)
def sync_routers() -> None:
    service_routers.sync_routers(context())


@berth_task(names.REAP_ORPHANS)
def reap_orphans() -> None:
    orphans.reap_orphans_once(context())


@berth_task(names.SAMPLE_USAGE)
def sample_usage() -> None:
    usage.sample_usage(context())


@berth_task(names.KEEP_FLEETS_WARM)
def keep_fleets_warm() -> None:
    fleet_warmth.keep_fleets_warm(context())


@berth_task(names.EXPIRE_RUNS)
def expire_runs() -> None:
    retention.expire_runs(context())


@berth_task(names.CHECK_ACTIVITY)
def check_activity() -> None:
    activity.record_ssh_activity(context())
