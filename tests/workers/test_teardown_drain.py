"""Stops drained in batches, on real Redis and the local cluster's apiserver.

A stop adds its jobs to one set and sends a task only when no drainer holds the
claim (``shared/queueing/teardowns.py``); the drainer tears each down as a
``teardown_job`` task would (``workers/teardown_drain.py``).
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from api.services.runs import stop_run
from shared import tasks
from shared.queueing import teardowns
from shared.state.records import Run, RunStatus
from tests.workers.worlds import submit
from workers import scheduling, sweeps, teardown, teardown_drain
from workers import tasks as worker_tasks
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


def _queued(ctx: WorkerContext) -> list[str]:
    key = f"{ctx.settings.redis.key_prefix}:celery:teardown"
    return [json.loads(raw)["headers"]["task"] for raw in ctx.store.r.lrange(key, 0, -1)]


def _placed(ctx: WorkerContext, names: list[str]) -> list[Run]:
    runs = [submit(ctx, name, "A100:1") for name in names]
    assert sorted(scheduling.run_pass(ctx).placed) == sorted(names)
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:provisioning")
    return runs


def _stop(ctx: WorkerContext, run: Run) -> None:
    stop_run(ctx.store, ctx.celery, ctx.store.get_run(run.id), abort=False)


def _status(ctx: WorkerContext, run: Run) -> RunStatus:
    return ctx.store.get_run(run.id).status


def test_many_stops_send_one_task_and_one_drain_tears_every_job_down(
    ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _placed(ctx, [f"d{i}" for i in range(5)])
    for run in runs:
        _stop(ctx, run)
    _stop(ctx, runs[0])  # stopping twice adds nothing

    # One drainer message waits; the stops after the first found it marked queued.
    assert _queued(ctx) == [tasks.TEARDOWN_PENDING]
    assert teardowns.waiting(ctx.store) == 5

    monkeypatch.setattr(worker_tasks, "context", lambda: ctx)
    # The task's body, as a worker runs the message a stop sent.
    cast(Any, worker_tasks.teardown_pending).run(teardowns.DRAINER_REASON)
    assert not ctx.store.r.exists(
        ctx.store.key("queued", tasks.TEARDOWN_PENDING, teardowns.DRAINER_REASON)
    )
    assert [_status(ctx, run) for run in runs] == [RunStatus.TERMINATED] * 5
    assert teardowns.waiting(ctx.store) == 0
    assert not ctx.store.held(ctx.store.key(*teardowns.RUNNER))
    # Started on, so no longer hidden from beat's sweep.
    assert not ctx.store.r.exists(ctx.store.key("queued", tasks.TEARDOWN_JOB, runs[0].job_ids[0]))
    assert teardown_drain.drain(ctx) == 0  # the redelivered message finds nothing


def test_a_stop_during_a_drain_is_drained_by_it_with_no_task(
    ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, late = _placed(ctx, ["early", "late"])
    _stop(ctx, first)
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:teardown")  # taken, and
    ctx.store.unmark_queued(tasks.TEARDOWN_PENDING, teardowns.DRAINER_REASON)  # started
    real = teardown.teardown_job
    stopped: list[str] = []

    def and_a_stop_meanwhile(c: Any, job_id: str) -> None:
        if not stopped:
            stopped.append(job_id)
            _stop(ctx, late)  # the API, while the drainer holds its claim
        real(c, job_id)

    monkeypatch.setattr(teardown, "teardown_job", and_a_stop_meanwhile)

    assert teardown_drain.drain(ctx) == 2
    assert _queued(ctx) == []  # the claim was held: the drainer was trusted to see it
    assert _status(ctx, late) == RunStatus.TERMINATED


def test_a_drainer_killed_after_taking_jobs_leaves_them_to_the_sweep_after_the_hold(
    ctx: WorkerContext,
) -> None:
    (run,) = _placed(ctx, ["lost"])
    _stop(ctx, run)
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:teardown")
    assert teardowns.take(ctx.store, teardown_drain.BATCH) == run.job_ids  # then killed

    sweeps.sweep(ctx)
    assert _queued(ctx) == []  # still marked queued: a lost message is presumed only later
    ctx.store.r.delete(ctx.store.key("queued", tasks.TEARDOWN_JOB, run.job_ids[0]))  # the hold
    sweeps.sweep(ctx)
    assert _queued(ctx) == [tasks.TEARDOWN_JOB]
