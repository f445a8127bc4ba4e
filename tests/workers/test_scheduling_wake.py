"""Asking for a pass sends a task only when no runner is at work; no request is lost.

On real Redis and the real Celery broker lists: the messages counted are the
ones a worker would receive.
"""

from __future__ import annotations

import time

import pytest

from shared.queueing.wake import (
    GENERATION,
    IDLE,
    RUNNER,
    forget_idle,
    note_idle,
    wake_scheduler,
)
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


class _Outcome:
    def __init__(self, idle: bool) -> None:
        self.idle = idle


def test_after_a_pass_that_found_nothing_waiting_freed_capacity_asks_for_no_pass(
    ctx: WorkerContext,
) -> None:
    store = ctx.store
    assert request_pass(store, lambda: _Outcome(idle=True)) == 1
    before = store.counter(store.key(*GENERATION))
    for n in range(5):  # five jobs end: nothing waits for their GPUs
        wake_scheduler(store, ctx.celery, f"run-{n}", freed=True)
    assert _queued(ctx) == 0
    assert store.counter(store.key(*GENERATION)) == before
    wake_scheduler(store, ctx.celery, "a submission")  # anything else still asks
    assert _queued(ctx) == 1


def test_a_request_during_an_idle_pass_keeps_freed_capacity_asking(ctx: WorkerContext) -> None:
    store = ctx.store

    passes: list[bool] = []

    def one_pass() -> _Outcome:
        passes.append(store.held(store.key(*IDLE)))
        if len(passes) == 1:
            wake_scheduler(store, ctx.celery, "a submission while the pass ran")
        return _Outcome(idle=True)

    # The request came after the pass began: it is not noted idle, so a second pass
    # runs for that request, and only that one (which saw no new request) notes it.
    assert request_pass(store, one_pass) == 2
    assert store.held(store.key(*IDLE))
    # What kept the first pass from writing it: a request since the generation it began at.
    started = store.counter(store.key(*GENERATION))
    forget_idle(store)
    wake_scheduler(store, ctx.celery, "another submission")
    assert not note_idle(store, started)
    assert not store.held(store.key(*IDLE))
    assert note_idle(store, store.counter(store.key(*GENERATION)))
    store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:scheduling")
    assert request_pass(store, lambda: _Outcome(idle=False)) == 1
    assert not store.held(store.key(*IDLE))  # something waits: freed capacity counts
    wake_scheduler(store, ctx.celery, "a job ended", freed=True)
    assert _queued(ctx) == 1


def test_a_pass_drops_the_note_before_it_reads_the_queue(ctx: WorkerContext) -> None:
    store = ctx.store
    request_pass(store, lambda: _Outcome(idle=True))
    seen: list[bool] = []
    request_pass(store, lambda: seen.append(store.held(store.key(*IDLE))))
    assert seen == [False]


def _gaps(ctx: WorkerContext, *, pass_s: float, share: float, gather_max_s: float) -> list[float]:
    """Idle time between three passes that each saw a new request while running."""
    spans: list[tuple[float, float]] = []

    def one_pass() -> None:
        started = time.monotonic()
        if len(spans) < 2:
            wake_scheduler(ctx.store, ctx.celery, f"during pass {len(spans)}")
        time.sleep(pass_s)
        spans.append((started, time.monotonic()))

    passes = request_pass(ctx.store, one_pass, share=share, gather_max_s=gather_max_s)
    assert passes == 3
    return [spans[i + 1][0] - spans[i][1] for i in range(2)]


def test_passes_run_back_to_back_take_at_most_their_share_of_a_core(ctx: WorkerContext) -> None:
    """A runner kept busy by requests waits in proportion to its passes before the next:
    with share 0.25, three times as long as the pass took."""
    for gap in _gaps(ctx, pass_s=0.1, share=0.25, gather_max_s=5.0):
        assert gap >= 0.3


def test_the_wait_between_passes_is_capped(ctx: WorkerContext) -> None:
    """However costly the pass, a request waits at most ``gather_max_s`` for the next
    one (uncapped, share 0.05 would wait 19 times the pass: 1.9 s here)."""
    for gap in _gaps(ctx, pass_s=0.1, share=0.05, gather_max_s=0.2):
        assert 0.2 <= gap < 1.5


class _Again:
    def __init__(self, again_in_s: float | None) -> None:
        self.again_in_s = again_in_s


def test_a_pass_that_asks_for_another_gets_it_with_no_request(ctx: WorkerContext) -> None:
    """A quick pass that drained a project's heads (or left out a run no pass decided)
    says when the next pass must come; nobody else may ask for it."""
    outcomes = [_Again(0.0), _Again(0.15), _Again(None)]
    times: list[float] = []

    def one_pass() -> _Again:
        times.append(time.monotonic())
        return outcomes[len(times) - 1]

    assert request_pass(ctx.store, one_pass) == 3
    assert times[2] - times[1] >= 0.15  # waited as long as the pass asked
    assert _queued(ctx) == 0


class _Decided:
    def __init__(self, repeat_share: float) -> None:
        self.repeat_share = repeat_share


def _gap_after(ctx: WorkerContext, repeat_share: float) -> float:
    """Idle time after a 0.2 s pass (share 0.25) that saw a request while it ran."""
    spans: list[tuple[float, float]] = []

    def one_pass() -> _Decided:
        started = time.monotonic()
        if not spans:
            wake_scheduler(ctx.store, ctx.celery, "a burst arrival during the pass")
        time.sleep(0.2)
        spans.append((started, time.monotonic()))
        return _Decided(repeat_share)

    assert request_pass(ctx.store, one_pass, share=0.25, gather_max_s=5.0) == 2
    return spans[1][0] - spans[0][1]


def test_a_pass_that_placed_what_it_decided_is_followed_at_once(ctx: WorkerContext) -> None:
    """Placing is work each run costs once: after a pass that placed every run it
    decided (burst arrivals), the next comes at once, not 3 x 0.2 s later; one that left
    a quarter of them waiting waits 3 x 0.05 s."""
    assert _gap_after(ctx, 0.0) < 0.1
    assert 0.15 <= _gap_after(ctx, 0.25) < 0.4
