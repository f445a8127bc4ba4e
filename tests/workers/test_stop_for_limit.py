"""A run stopped for a limit (max_duration, utilization_policy), on a real Redis.

The verdict is reached from records read a moment before; another writer may move
the run or a job meanwhile. The stop is then written over that change, unless the
run is no longer in the status it was judged in.
"""

from __future__ import annotations

import time

import pytest

from shared.state.records import Event, RunStatus
from tests.workers.worlds import submit
from workers import requeue, scheduling
from workers.context import WorkerContext

pytestmark = pytest.mark.integration

REASON = "GPU utilisation stayed below 10% for 300 s (utilization_policy)"


def test_a_stop_is_written_over_an_unrelated_change_made_since_the_verdict(
    ctx: WorkerContext,
) -> None:
    run = submit(ctx, "idle", "A100:1")
    assert scheduling.run_pass(ctx).placed == ["idle"]
    judged = ctx.store.get_run(run.id)
    judged_jobs = ctx.store.jobs_of(judged)
    # Another writer records the job's pod after the records were read.
    job = ctx.store.get_job(run.job_ids[0])
    job.pod_name = "berth-main-idle-0-0"
    assert ctx.store.save_job(job, Event(at=time.time(), kind="status", message="pod created"))

    assert requeue.stop_for_limit(ctx, judged, judged_jobs, REASON)
    stopped = ctx.store.get_run(run.id)
    assert (stopped.status, stopped.stop_requested, stopped.reason) == (
        RunStatus.TERMINATING,
        True,
        REASON,
    )
    jobs = ctx.store.jobs_of(stopped)
    assert [j.status for j in jobs] == [RunStatus.TERMINATING]
    assert jobs[0].pod_name == "berth-main-idle-0-0"  # the other writer's change is kept


def test_a_run_requeued_since_the_verdict_is_not_stopped(ctx: WorkerContext) -> None:
    run = submit(ctx, "moved", "A100:1")
    assert scheduling.run_pass(ctx).placed == ["moved"]
    judged = ctx.store.get_run(run.id)
    judged_jobs = ctx.store.jobs_of(judged)
    requeue.requeue_run(ctx, run.id, "its pod was evicted")

    assert not requeue.stop_for_limit(ctx, judged, judged_jobs, REASON)
    after = ctx.store.get_run(run.id)
    assert not after.stop_requested
    assert after.status == RunStatus.PENDING
