"""Deep queue positions, published beside the run records instead of in them.

A run's reason names its place in its project's queue ("...; position 812 of
10000 in main's queue"). Near the front that place is written into the run's
record (at most every ``scheduling.position_refresh_s``: at depth passes come many
times a second, each moving every place). Deep in a long queue almost every place shifts
on every admission: written into the records, 10,000 waiting runs cost hundreds
of record writes a second, and every process that caches records (each
worker's scheduling passes and sweeps) read them all back. So past
``scheduling.exact_positions`` the record holds only the cause, and the
scheduler publishes every deep place in one Redis string, replaced whole at most
every ``scheduling.position_refresh_s``; whoever shows a run (the API, the dashboard)
joins the two with :func:`shown`.

    P:queue:positions   one string: a line "<run id> <position> <queued>" per deep run

One string, not a hash: a publication is one ``SET`` of ~45 bytes per run (10,000 runs
cost Redis well under a millisecond; a 10,000-field hash cost it several), and a
reader finds a run's line with one substring search.
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
    if not any(_deep(r) for r in runs):
        return list(runs)
    with keys.wrapped():
        raw = store.r.get(keys.key(store, POSITIONS))
    published = raw.decode() if raw else ""
    return [_with_position(r, published) if _deep(r) else r for r in runs]


def publish(store: Store, positions: Mapping[str, tuple[int, int]], *, every_s: float) -> None:
    """Replace the published deep positions with ``positions`` (run id -> (position,
    queued)) in one write; they expire if no pass replaces them, as when the scheduler
    stops, so a stale place is never shown for long."""
    lines = "".join(f"\n{i} {p} {q}" for i, (p, q) in positions.items())
    with keys.wrapped():
        store.r.set(keys.key(store, POSITIONS), lines + "\n", ex=max(_MIN_TTL_S, int(every_s * 3)))


def _with_position(run: Run, published: str) -> Run:
    start = published.find(f"\n{run.id} ")
    if start < 0:
        return run
    line = published[start + 1 : published.index("\n", start + 1)]
    _, position, queued = line.split(" ")
    reason = queue_reason(run.reason, int(position), int(queued), run.project)
    return run.model_copy(update={"reason": reason})


def _deep(run: Run) -> bool:
    """Waiting with a reason that names no place: one whose place is published."""
    return run.status == RunStatus.PENDING and bool(run.reason) and "; position " not in run.reason
