"""Scheduled runs on a real Redis and apiserver: one run per cron time, never two.

The clock is passed in (``now``), so a minute of cron time costs no waiting.
"""

from __future__ import annotations

import pytest

from api.services import schedules as schedule_service
from shared.state import schedules
from shared.state.records import Project, RunStatus, User
from shared.state.schedules import ScheduledRun
from workers import schedules as starter
from workers.celery_app import app
from workers.context import WorkerContext

pytestmark = pytest.mark.integration

CONF = """
type: task
name: nightly
commands: [python3 train.py]
schedule:
  cron: "*/5 * * * *"
"""


def _apply(ctx: WorkerContext, text: str = CONF) -> ScheduledRun:
    applied = schedule_service.apply(
        ctx.store,
        ctx.celery,
        project=Project(name="main"),
        user=User(name="tester", token_sha256="0" * 64),
        configuration=text,
        clusters=ctx.clusters,
    )
    assert isinstance(applied, ScheduledRun)
    return applied


def _runs_named(ctx: WorkerContext, name: str) -> list[str]:
    page, _ = ctx.store.page_runs("main", limit=100)
    return [r.id for r in page if r.name == name]


def test_applying_a_schedule_starts_nothing_until_its_cron_time(ctx: WorkerContext) -> None:
    record = _apply(ctx)
    first = schedules.next_start(record.crons, after=record.created_at)
    assert starter.start_due_runs(ctx, now=first - 1) == []
    assert _runs_named(ctx, "nightly") == []
    listed = schedule_service.list_schedules(ctx.store, Project(name="main"))
    assert [(s.name, s.next_start_at) for s in listed] == [("nightly", first)]


def test_each_cron_time_starts_one_run_even_with_two_beats_and_a_redelivery(
    ctx: WorkerContext,
) -> None:
    record = _apply(ctx)
    tick = schedules.next_start(record.crons, after=record.created_at)
    started = starter.start_due_runs(ctx, now=tick + 3)
    assert len(started) == 1
    run = ctx.store.get_run(started[0])
    assert (run.name, run.status, run.user) == ("nightly", RunStatus.SUBMITTED, "tester")
    assert len(run.job_ids) == 1
    # A second beat (or the same message again) at the same time: the tick is taken.
    assert starter.start_due_runs(ctx, now=tick + 4) == []
    # Even one that read the schedule before the first beat recorded the tick.
    schedules.put(ctx.store, record)
    assert starter.start_due_runs(ctx, now=tick + 5) == []
    assert _runs_named(ctx, "nightly") == [run.id]


def test_a_cron_time_is_skipped_while_the_previous_run_is_active_and_the_next_one_starts(
    ctx: WorkerContext,
) -> None:
    record = _apply(ctx)
    tick1 = schedules.next_start(record.crons, after=record.created_at)
    (first,) = starter.start_due_runs(ctx, now=tick1 + 1)
    tick2 = schedules.next_start(record.crons, after=tick1)
    assert starter.start_due_runs(ctx, now=tick2 + 1) == []
    skipped = [e.message for _, e in ctx.store.events(first) if "skipped" in e.message]
    assert len(skipped) == 1, skipped
    run = ctx.store.get_run(first)
    run.status = RunStatus.DONE
    assert ctx.store.save_run(run)
    tick3 = schedules.next_start(record.crons, after=tick2)
    (second,) = starter.start_due_runs(ctx, now=tick3 + 1)
    assert second != first
    assert sorted(_runs_named(ctx, "nightly")) == sorted([first, second])


def test_cron_times_missed_while_berth_was_down_start_one_run_not_one_each(
    ctx: WorkerContext,
) -> None:
    record = _apply(ctx)
    tick = schedules.next_start(record.crons, after=record.created_at)
    assert len(starter.start_due_runs(ctx, now=tick + 3600)) == 1  # twelve ticks passed


def test_a_deleted_schedule_starts_no_more_runs(ctx: WorkerContext) -> None:
    record = _apply(ctx)
    schedule_service.delete_schedule(ctx.store, Project(name="main"), "nightly")
    tick = schedules.next_start(record.crons, after=record.created_at)
    assert starter.start_due_runs(ctx, now=tick + 1) == []
    assert schedule_service.list_schedules(ctx.store, Project(name="main")) == []


def test_beat_looks_for_due_schedules_every_few_seconds() -> None:
    entry = app.conf.beat_schedule["start-scheduled-runs"]
    assert entry["task"] == "berth.scheduling.start_scheduled_runs"
    assert entry["schedule"] <= 30  # cron times are minutes: a start is at most this late
