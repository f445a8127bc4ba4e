"""Asking for a pass sends a task only when no runner is at work; no request is lost.

On real Redis and the real Celery broker lists: the messages counted are the
ones a worker would receive.
"""

from __future__ import annotations

import pytest

from shared.queueing.wake import GENERATION, RUNNER, wake_scheduler
from workers.context import WorkerContext
from workers.scheduling_trigger import request_pass

pytestmark = pytest.mark.integration


def _queued(ctx: WorkerContext) -> int:
    """Messages waiting on the broker's scheduling queue (kombu's Redis list)."""
    prefix = ctx.settings.redis.key_prefix
    return int(ctx.store.r.llen(f"{prefix}:celery:scheduling"))


def test_with_no_runner_a_request_is_a_task(ctx: WorkerContext) -> None:
    before = ctx.store.counter(ctx.store.key(*GENERATION))
    wake_scheduler(ctx.store, ctx.celery, "run-1")
    assert _queued(ctx) == 1
    assert ctx.store.counter(ctx.store.key(*GENERATION)) == before + 1


def test_while_a_runner_holds_its_claim_requests_only_bump_the_counter(
    ctx: WorkerContext,
) -> None:
    assert ctx.store.claim(ctx.store.key(*RUNNER), "someone", ttl_s=30)
    for n in range(5):
        wake_scheduler(ctx.store, ctx.celery, f"run-{n}")
    assert _queued(ctx) == 0


def test_requests_during_a_pass_get_one_more_pass_and_no_task(ctx: WorkerContext) -> None:
    """The runner's own checks serve what came while it ran: the second pass sees it."""
    passes: list[int] = []

    def one_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            for n in range(5):
                wake_scheduler(ctx.store, ctx.celery, f"run-{n}")

    assert request_pass(ctx.store, one_pass) == 2
    assert _queued(ctx) == 0
    assert not ctx.store.held(ctx.store.key(*RUNNER))
    wake_scheduler(ctx.store, ctx.celery, "after")  # the runner is gone: a task again
    assert _queued(ctx) == 1
