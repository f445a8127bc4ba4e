"""Asking for a scheduling pass: a counter bump, and a task only when no pass runs.

Passes cover the whole queue (:mod:`workers.scheduling_trigger`), so a request
needs a Celery task only when nobody is running passes. While a runner holds
its claim, bumping the generation counter is enough: the runner compares the
counter after every pass and again after releasing its claim, so a bump it has
not seen yet always gets one more pass. A burst of 500 submissions therefore
costs about as many tasks as passes, not 500 tasks of broker round trips and
worker threads that would each find the claim taken and return.

The order is what makes it safe: bump first, then look at the claim. A runner
that released before the look is seen as gone (a task is sent); one that still
holds it then will see the bump in its post-release check.
"""

from __future__ import annotations

from celery import Celery

from shared import tasks
from shared.state.store import Store

GENERATION = ("scheduling", "generation")
"""Bumped by every request for a pass."""
RUNNER = ("scheduling", "runner")
"""Held (with a TTL) by the worker running passes."""


def wake_scheduler(store: Store, celery: Celery, reason: str) -> None:
    """Ask for a pass because of ``reason`` (a run id, or what changed)."""
    store.incr(store.key(*GENERATION))
    if not store.held(store.key(*RUNNER)):
        tasks.send(celery, tasks.SCHEDULE_RUN, reason)
