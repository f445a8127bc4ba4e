"""Coalescing scheduling requests into as few passes as keep the queue current.

Every submission, finished job and capacity change asks for a pass
(:func:`shared.queueing.wake.wake_scheduler`, which sends a task only when no
runner is at work). Passes
cover the whole queue, so one pass that starts after a request satisfies it,
and requests that arrive while a pass runs need exactly one more pass, not one
each. A generation counter records requests; one worker at a time runs passes
until the counter stops moving, and everyone else returns at once instead of
blocking a worker thread on a lock that provisioning work needs. When requests
keep coming, the runner waits as long as its last pass took (at most 50 ms)
before the next, so a burst of submissions costs a bounded share of a core.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from shared.queueing import wake
from shared.state.store import Store

_RUNNER_TTL_S = 30  # a crashed runner's claim lapses; renewed before every pass
_GATHER_MAX_S = 0.05  # the most a request waits for the next pass to gather others


def request_pass(store: Store, run_pass: Callable[[], object]) -> int:
    """Record a request, and run passes if nobody else is; returns the passes run here."""
    generation = store.key(*wake.GENERATION)
    runner = store.key(*wake.RUNNER)
    me = secrets.token_hex(8)
    store.incr(generation)
    passes = 0
    while True:
        if not store.claim(runner, me, ttl_s=_RUNNER_TTL_S):
            return passes  # the current runner will see our request
        try:
            while True:
                seen = store.counter(generation)
                store.claim(runner, me, ttl_s=_RUNNER_TTL_S, renew=True)
                started = time.monotonic()
                wake.forget_idle(store)
                outcome = run_pass()
                if getattr(outcome, "idle", False):
                    wake.note_idle(store, seen)
                passes += 1
                if store.counter(generation) == seen:
                    break
                # More requests came during the pass: gather for as long as the pass
                # took (capped) before the next, so a stream of submissions is served
                # by passes at most half the time, not by one pass per arrival.
                time.sleep(min(time.monotonic() - started, _GATHER_MAX_S))
        finally:
            store.release(runner, me)
        # A request that came between our last check and the release found the
        # claim taken and returned; it is ours to serve.
        if store.counter(generation) == seen:
            return passes
