"""Coalescing scheduling requests into as few passes as keep the queue current.

Every submission, finished job and capacity change asks for a pass
(:func:`shared.queueing.wake.wake_scheduler`, which sends a task only when no
runner is at work). Passes
cover the whole queue, so one pass that starts after a request satisfies it,
and requests that arrive while a pass runs need exactly one more pass, not one
each. A generation counter records requests; one worker at a time runs passes
until the counter stops moving, and everyone else returns at once instead of
blocking a worker thread on a lock that provisioning work needs. When requests
keep coming, the runner waits in proportion to its last pass (the part of it that
decided again that runs wait) before the next (``scheduling.pass_share``, capped by
``scheduling.gather_max_s``), so passes take a bounded share of a core however long
the queue. A fixed wait did not: a pass over 10,000 waiting runs takes ~0.3 s, and
with each finished job asking for one they ran back to back, taking a core from the
cluster and from the workers that start the pods. The wait is what a request's latency
pays, and it shrinks with the pass.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from shared.queueing import wake
from shared.state.store import Store

_RUNNER_TTL_S = 30  # a crashed runner's claim lapses; renewed before every pass


def request_pass(
    store: Store,
    run_pass: Callable[[], object],
    *,
    share: float = 0.25,
    gather_max_s: float = 1.0,
) -> int:
    """Record a request, and run passes if nobody else is; returns the passes run here.

    ``share`` and ``gather_max_s``: see :class:`shared.settings.SchedulingSettings`."""
    gather = 1 / share - 1
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
                again_in_s: float | None = getattr(outcome, "again_in_s", None)
                if store.counter(generation) == seen and again_in_s is None:
                    break
                # More requests came during the pass: gather before the next, so a
                # stream of requests is served by passes at most ``share`` of the
                # time, not by one pass per arrival. A quick pass that wants a next
                # one (its pass result says when) gets it even if nobody asks.
                gathering = min(
                    _overhead(outcome, time.monotonic() - started) * gather, gather_max_s
                )
                time.sleep(max(gathering, again_in_s or 0.0))
        finally:
            store.release(runner, me)
        # A request that came between our last check and the release found the
        # claim taken and returned; it is ours to serve.
        if store.counter(generation) == seen:
            return passes


def _overhead(outcome: object, took_s: float) -> float:
    """The part of the pass's time the share bounds: the runs it decided to leave where
    they were (``PassResult.repeat_share``; all of it when the outcome does not say).

    Placing a run is work the run costs once whichever pass does it: waiting three times
    a burst's pass that placed 80 arrivals in 0.3 s only held the next arrivals back a
    second (a 500-run burst: passes 1.3 s apart). At depth a quick pass decides 200
    heads to place one or two, and waits as before."""
    share = getattr(outcome, "repeat_share", None)
    return took_s * (1.0 if share is None else share)
