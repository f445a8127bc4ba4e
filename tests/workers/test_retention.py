"""Retention on a real Redis and apiserver: finished runs go with their output after the
retention period, and their names then answer "expired", never an empty answer."""

from __future__ import annotations

import time

import pytest

from shared.errors import NotFoundError
from shared.runlogs.lines import Cursor
from shared.runlogs.store import LogStore
from shared.state.records import Event, Job, Run, RunStatus
from tests.factories import run_record
from workers.context import WorkerContext
from workers.retention import expire_runs

pytestmark = pytest.mark.integration

DAY_S = 86400.0


def _run(ctx: WorkerContext, name: str, status: RunStatus, *, ended_days_ago: float) -> Run:
    at = time.time() - ended_days_ago * DAY_S
    run = run_record(name, status, submitted_at=at - 60, updated_at=at)
    job = Job(id=f"job-{name}", run_id=run.id, project="main", run_name=name, status=status)
    run.job_ids = [job.id]
    ctx.store.create_run(run, [job], Event(at=at, kind="status", message="submitted"))
    if status.is_finished:
        ctx.store.r.srem(ctx.store.key("active"), run.id)
    logs = LogStore(ctx.store, cap_bytes=1 << 20)
    logs.register_attempt(job.id, 1, "uid")
    ctx.store.r.set(logs.lease_key(), "c")
    after = Cursor(1, 1)
    assert logs.append(job.id, 1, b"out\n", lines=1, before=Cursor(), after=after, holder="c") == 1
    return run


def test_a_finished_run_past_retention_goes_with_its_output_and_its_name_says_expired(
    ctx: WorkerContext,
) -> None:
    old = _run(ctx, "old", RunStatus.DONE, ended_days_ago=31)
    recent = _run(ctx, "recent", RunStatus.DONE, ended_days_ago=2)
    # Submitted long ago but still running (a service): never expired, however old.
    service = _run(ctx, "service", RunStatus.RUNNING, ended_days_ago=40)

    assert expire_runs(ctx) == 1
    assert expire_runs(ctx) == 0  # twice is harmless

    with pytest.raises(NotFoundError, match=r"'old' has expired: finished runs are kept 30 days"):
        ctx.store.run_by_name("main", "old")
    assert ctx.store.find_job(old.job_ids[0]) is None
    logs = LogStore(ctx.store, cap_bytes=1 << 20)
    assert logs.attempts(old.job_ids[0]) == {}
    assert logs.entries(old.job_ids[0], 1, after="-", count=10) == []
    for kept in (recent, service):
        assert ctx.store.run_by_name("main", kept.name).id == kept.id
        assert logs.meta(kept.job_ids[0], 1).lines == 1
    # The name lives again for a new run.
    _run(ctx, "old", RunStatus.RUNNING, ended_days_ago=0)
    assert ctx.store.run_by_name("main", "old").status == RunStatus.RUNNING
