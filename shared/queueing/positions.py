"""Deep queue positions, published beside the run records instead of in them.

A run's reason names its place in its project's queue ("...; position 812 of
10000 in main's queue"). Near the front that place is written into the run's
record, so it is exact at once. Deep in a long queue almost every place shifts
on every admission: written into the records, 10,000 waiting runs cost hundreds
of record writes a second, and every process that caches records (each
worker's scheduling passes and sweeps) read them all back. So past
``scheduling.exact_positions`` the record holds only the cause, and the
scheduler publishes every deep place in one hash, replaced whole at most every
``scheduling.position_refresh_s``; whoever shows a run (the API, the dashboard)
joins the two with :func:`shown`.

    P:queue:positions   hash run id -> "position queued" (expires if not replaced)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.queueing import keys
from shared.queueing.model import queue_reason
from shared.state.records import Run, RunStatus
from shared.state.store import Store

POSITIONS = "positions"
_MIN_TTL_S = 60


def shown(store: Store, runs: Sequence[Run]) -> list[Run]:
    """``runs``, each deep in a queue with the published position added to its reason
    (a copy; the others as given)."""
    deep = [r for r in runs if _deep(r)]
    if not deep:
        return list(runs)
    with keys.wrapped():
        found = store.r.hmget(keys.key(store, POSITIONS), [r.id for r in deep])
    added: dict[str, Run] = {}
    for run, raw in zip(deep, found, strict=True):
        if raw is not None:
            position, queued = (int(v) for v in raw.split())
            reason = queue_reason(run.reason, position, queued, run.project)
            added[run.id] = run.model_copy(update={"reason": reason})
    return [added.get(r.id, r) for r in runs]


def publish(store: Store, positions: Mapping[str, tuple[int, int]], *, every_s: float) -> None:
    """Replace the published deep positions with ``positions`` (run id -> (position,
    queued)) in one step; they expire if no pass replaces them, as when the scheduler
    stops, so a stale place is never shown for long."""
    target = keys.key(store, POSITIONS)
    ttl = max(_MIN_TTL_S, int(every_s * 3))
    with keys.wrapped():
        if not positions:
            store.r.delete(target)
            return
        staging = f"{target}:next"
        pipe = store.r.pipeline(transaction=True)
        pipe.delete(staging)
        pipe.hset(staging, mapping={i: f"{p} {q}" for i, (p, q) in positions.items()})
        pipe.expire(staging, ttl)
        pipe.rename(staging, target)
        pipe.execute()


def _deep(run: Run) -> bool:
    """Waiting with a reason that names no place: one whose place is published."""
    return run.status == RunStatus.PENDING and bool(run.reason) and "; position " not in run.reason
