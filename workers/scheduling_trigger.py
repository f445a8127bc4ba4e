"""Coalescing scheduling requests into as few passes as keep the queue current.

Every submission, finished job and capacity change asks for a pass. Passes
cover the whole queue, so one pass that starts after a request satisfies it,
and requests that arrive while a pass runs need exactly one more pass, not one
each. A generation counter records requests; one worker at a time runs passes
until the counter stops moving, and everyone else returns at once instead of
blocking a worker thread on a lock that provisioning work needs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from shared.store import Store

_RUNNER_TTL_S = 30  # a crashed runner's claim lapses; renewed before every pass


def request_pass(store: Store, run_pass: Callable[[], object]) -> int:
    """Record a request, and run passes if nobody else is; returns the passes run here."""
    generation = store.key("scheduling", "generation")
    runner = store.key("scheduling", "runner")
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
                run_pass()
                passes += 1
                if store.counter(generation) == seen:
                    break
        finally:
            store.release(runner, me)
        # A request that came between our last check and the release found the
        # claim taken and returned; it is ours to serve.
        if store.counter(generation) == seen:
            return passes
