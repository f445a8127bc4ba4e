"""Quick passes: decide only the head of each project's queue.

A pass over a deep queue visits every waiting run: ~20 steps each (its record,
its route, its request, the planner's turn, its reason), ~35 us per run, so
~0.35 s per pass at 10,000 waiting runs whatever the pass can admit. While the
cluster is full a pass admits only what was just freed, and what it can admit
is found at the head of the queues: the planner takes each project's runs in
queue order and stops admitting a shape once none fits. So between two full
passes a pass may look only at each project's first ``per_project`` queued
runs (queue order: priority, then submission).

Finding those heads must not cost a visit to every run either (sorting 10,000
runs each pass was a third of the workers' CPU in a deep drain), so the record
cache keeps a :class:`QueueIndex`: each project's queued runs in queue order,
updated only for the runs whose records changed (:mod:`shared.queueing.view`).

What a quick pass leaves to the next full one (at most
``scheduling.full_pass_every_s`` later, see :func:`full_pass_due`): runs past
the heads are neither admitted nor failed by it, so a small run deep in a queue
of blocked big ones waits that long to be backfilled, a run that has become
impossible (its nodes left) that long to fail, and the deep positions are not
published (their places would be those of the heads only). A run no pass has
seen yet (``submitted``) waits at most ``scheduling.first_decision_s`` for a
full pass, so an impossible submission still fails within a second or so.
Running runs (a service's added replica) are always in.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import KeysView, Mapping, Sequence
from dataclasses import dataclass, replace

from shared.placement.placements import HOLDING
from shared.queueing.model import Wait
from shared.state.records import Job, Run, RunStatus

QUEUED = (RunStatus.SUBMITTED, RunStatus.PENDING)

QueueKey = tuple[int, float, str]


def queue_order(run: Run) -> QueueKey:
    """Priority first, then submission, then id (as :mod:`shared.queueing.order`)."""
    return (-run.priority, run.submitted_at, run.id)


@dataclass(frozen=True)
class QueueHeads:
    """What a quick pass decides and what it leaves out, read at one instant."""

    heads: frozenset[str]
    """The queued runs a quick pass decides: each project's first ``per_project``."""
    cut: Mapping[str, int]
    """Project -> its queued runs left out."""
    unseen: bool
    """Some run left out was never decided by a pass (``submitted``)."""


class QueueIndex:
    """Each project's queued runs in queue order, kept current run by run.

    A run is in while it is queued (``submitted`` or ``pending``) and none of its jobs
    holds a placement (a gang sent back to the queue while a pod of it is deleted):
    the capacity such a run holds must count in every pass, so it is never left out.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, QueueKey, bool]] = {}
        """Run id -> (project, queue key, submitted)."""
        self._order: dict[str, list[QueueKey]] = {}
        """Project -> the queue keys of its queued runs, sorted (the key ends in the id)."""
        self._submitted: dict[str, int] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._order.clear()
        self._submitted.clear()

    def update(self, run_id: str, run: Run | None, jobs: Sequence[Job]) -> None:
        """Take in a run's current records (``run`` None: it is no longer active)."""
        old = self._entries.pop(run_id, None)
        if old is not None:
            project, key, submitted = old
            keys = self._order[project]
            del keys[bisect_left(keys, key)]
            self._submitted[project] -= submitted
        if run is None or run.status not in QUEUED or _holds(jobs):
            return
        key = queue_order(run)
        submitted = run.status == RunStatus.SUBMITTED
        self._entries[run_id] = (run.project, key, submitted)
        insort(self._order.setdefault(run.project, []), key)
        self._submitted[run.project] = self._submitted.get(run.project, 0) + submitted

    def queued(self) -> KeysView[str]:
        """Every queued run's id (a live view: read it under the owner's lock)."""
        return self._entries.keys()

    def heads(self, per_project: int) -> QueueHeads:
        """Each project's first ``per_project`` queued runs are the heads. Costs the
        heads, not the queue: no run past them is visited."""
        heads: list[str] = []
        cut: dict[str, int] = {}
        unseen = False
        for project, keys in self._order.items():
            head = keys[:per_project]
            heads += [key[2] for key in head]
            if len(keys) <= per_project:
                continue
            cut[project] = len(keys) - per_project
            among = sum(self._entries[key[2]][2] for key in head)
            unseen = unseen or self._submitted[project] > among
        return QueueHeads(frozenset(heads), cut, unseen)


def _holds(jobs: Sequence[Job]) -> bool:
    return any(job.placement is not None and job.status in HOLDING for job in jobs)


def full_pass_due(
    heads: QueueHeads | None,
    *,
    last_full_at: float,
    now: float,
    every_s: float,
    first_decision_s: float,
) -> bool:
    """Whether this pass must decide every run rather than the heads only."""
    if heads is None or not heads.cut:
        return True  # nothing would be left out: the quick pass is the full one
    since = now - last_full_at
    return since >= every_s or (heads.unseen and since >= first_decision_s)


def counted_whole(waits: list[Wait], cut: Mapping[str, int]) -> list[Wait]:
    """Each wait's queue length with the runs a quick pass left out, so the reason a
    head run shows ("position 3 of 9,000") reads as a full pass would write it."""
    if not cut:
        return waits
    return [
        replace(w, queued=w.queued + cut[w.project]) if w.position and w.project in cut else w
        for w in waits
    ]
