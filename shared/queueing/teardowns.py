"""Asking for jobs to be torn down: a set of job ids, and a task only when no drainer runs.

A stop of 1,000 runs was 1,000 ``teardown_job`` tasks, and each task costs a worker
more than its own work: the broker's message, its acknowledgement and the three
events Flower reads (bench/RESULTS.md, twenty-first session: the worker's CPU per
stopped run fell by a quarter with the events alone turned off). Stops now add their
jobs to one set, and one drainer at a time (:mod:`workers.teardown_drain`) takes them
from it in batches, tearing each down exactly as ``teardown_job`` does.

The order makes it safe, as for the scheduler's passes (:mod:`shared.queueing.wake`):
add first, then look at the drainer's claim. A drainer that released before the look
is seen as gone (a task is sent); one that still holds it looks at the set again after
releasing, and drains what came.

Each id is also marked queued (``Store.mark_queued``, as
:func:`shared.tasks.send_unqueued` does), so beat's sweep does not send a
``teardown_job`` for it while it waits in the set; the drainer unmarks it when it
starts on it. Whatever leaves the set and is lost with a killed drainer stays marked
until the hold ends, then the sweep sends it again: the same bound as a lost message.
"""

from __future__ import annotations

import contextlib

from celery import Celery

from shared import tasks
from shared.errors import StoreError
from shared.queueing import keys
from shared.state.store import Store

PENDING = ("teardown", "pending")
"""Job ids waiting for a drainer."""
RUNNER = ("teardown", "drainer")
"""Held (with a TTL) by the worker draining :data:`PENDING`."""
DRAINER_REASON = "stops"
"""The drainer message's one argument: as marked queued, so one waiting is enough."""


def request_teardown(store: Store, celery: Celery, job_ids: list[str]) -> None:
    """Have ``job_ids`` torn down (idempotent); those already waiting are not added twice."""
    wanted = [(tasks.TEARDOWN_JOB, job_id) for job_id in dict.fromkeys(job_ids)]
    fresh = store.mark_queued(wanted, ttl_s=tasks.RESEND_HOLD_S)
    added = [job_id for (_, job_id), needed in zip(wanted, fresh, strict=True) if needed]
    if not added:
        return
    try:
        with keys.wrapped():
            store.r.sadd(store.key(*PENDING), *added)
        if not store.held(store.key(*RUNNER)):
            # One drainer message waiting is enough (its drainer takes what comes before
            # it starts); the task unmarks it when it starts.
            tasks.send_unqueued(celery, store, [(tasks.TEARDOWN_PENDING, DRAINER_REASON)])
    except Exception:
        # Neither the set nor a task may have taken them: unmarked, beat's sweep sends
        # each as a teardown_job at its next look instead of after the hold.
        for job_id in added:
            with contextlib.suppress(StoreError):
                store.unmark_queued(tasks.TEARDOWN_JOB, job_id)
        raise


def take(store: Store, count: int) -> list[str]:
    """Up to ``count`` waiting job ids, removed from the set."""
    with keys.wrapped():
        found = store.r.spop(store.key(*PENDING), count)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in found or []]


def waiting(store: Store) -> int:
    with keys.wrapped():
        return int(store.r.scard(store.key(*PENDING)))
