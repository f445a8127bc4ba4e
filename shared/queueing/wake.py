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

A job that ends frees capacity, and asks for a pass in case something waits for
it (``freed=True``). When nothing waits, that pass loads every active run to
find so: a stop of 1,000 runs made about 250 such passes, a third of the
worker's CPU during the stop. So a pass that finds nothing waiting notes it
(:data:`IDLE`), and freed-capacity requests pass by while the note stands. It
is safe because of when the note is written and dropped: a pass drops it
before it reads the queue, and writes it afterwards only if no request at all
came since it started (one script, so no request slips between the check and
the write). A run that comes to wait has asked for a pass itself, and that pass
reads the queue after every capacity freed before it.
"""

from __future__ import annotations

from celery import Celery

from shared import tasks
from shared.queueing import keys
from shared.state.store import Store

GENERATION = ("scheduling", "generation")
"""Bumped by every request for a pass."""
RUNNER = ("scheduling", "runner")
"""Held (with a TTL) by the worker running passes."""
IDLE = ("scheduling", "idle")
"""Set while the last pass found nothing waiting and no request came since."""
IDLE_TTL_S = 60  # beat's sweep asks for passes anyway; a lost drop must not last

_NOTE_IDLE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""


def wake_scheduler(store: Store, celery: Celery, reason: str, *, freed: bool = False) -> None:
    """Ask for a pass because of ``reason`` (a run id, or what changed); ``freed``: only
    because capacity was freed, which no pass can use while nothing waits."""
    if freed and store.held(store.key(*IDLE)):
        return
    store.incr(store.key(*GENERATION))
    if not store.held(store.key(*RUNNER)):
        tasks.send(celery, tasks.SCHEDULE_RUN, reason)


def forget_idle(store: Store) -> None:
    """Before a pass reads the queue: freed capacity asks for passes again."""
    with keys.wrapped():
        store.r.delete(store.key(*IDLE))


def note_idle(store: Store, started_at: int) -> bool:
    """After a pass that found nothing waiting, begun at generation ``started_at``: let
    freed-capacity requests pass by, unless a request came meanwhile (then False)."""
    with keys.wrapped():
        script = store.r.register_script(_NOTE_IDLE)
        args = [str(started_at), str(IDLE_TTL_S)]
        return bool(script(keys=[store.key(*GENERATION), store.key(*IDLE)], args=args))
