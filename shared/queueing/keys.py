"""The queue's own Redis keys, beside the records of :mod:`shared.state.store`.

Run and job records stay the system of record; these keys only add what a
record has no field for::

    P:queue:capacity-version  integer bumped by every placement (the fence)
    P:queue:admitted          hash run id -> when it was last placed (deadlines)
    P:queue:attempts          hash run id -> how many times it was requeued
    P:queue:activity          hash run id -> last sign of use (dev environments)
    P:queue:cleanup           hash run id -> when a requeue began deleting its pods
    P:lock:scheduling         the pass lock (a redis-py Lock)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from shared.errors import StoreError
from shared.state.store import Store

CAPACITY_VERSION = "capacity-version"
ADMITTED = "admitted"
ATTEMPTS = "attempts"
ACTIVITY = "activity"
CLEANUP = "cleanup"


def key(store: Store, name: str) -> str:
    return store.key("queue", name)


def lock_key(store: Store) -> str:
    return store.key("lock", "scheduling")


def timestamps(store: Store, name: str, run_ids: Iterable[str] | None = None) -> dict[str, float]:
    """Run id -> the float stored in hash ``name``: for ``run_ids``, or all of them.

    Without ids the whole hash is read, which is the cheap way when it holds far fewer
    entries than there are active runs (cleanups, admissions, activity).
    """
    with wrapped():
        if run_ids is None:
            raw = store.r.hgetall(key(store, name))
            return {k.decode(): float(v) for k, v in raw.items()}
        ids = list(run_ids)
        values = store.r.hmget(key(store, name), ids) if ids else []
    return {i: float(v) for i, v in zip(ids, values, strict=True) if v is not None}


def record_activity(store: Store, run_id: str, at: float) -> None:
    """Note a sign of use of a dev environment (an attach, an SSH session); see limits."""
    with wrapped():
        store.r.hset(key(store, ACTIVITY), run_id, repr(at))


def forget(store: Store, run_ids: Iterable[str]) -> None:
    """Drop the queue's notes about finished runs."""
    ids = list(run_ids)
    if not ids:
        return
    with wrapped():
        pipe = store.r.pipeline(transaction=False)
        for name in (ADMITTED, ATTEMPTS, ACTIVITY, CLEANUP):
            pipe.hdel(key(store, name), *ids)
        pipe.execute()


def known_runs(store: Store) -> set[str]:
    """Every run id the queue keeps notes about (for pruning)."""
    with wrapped():
        pipe = store.r.pipeline(transaction=False)
        for name in (ADMITTED, ATTEMPTS, ACTIVITY, CLEANUP):
            pipe.hkeys(key(store, name))
        rows = pipe.execute()
    return {k.decode() for row in rows for k in row}


@contextmanager
def wrapped() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as e:
        raise StoreError(f"Redis failed: {e}") from e
