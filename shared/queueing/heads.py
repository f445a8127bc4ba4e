"""Quick passes: decide only the head of each project's queue.

A pass over a deep queue visits every waiting run: ~20 steps each (its record,
its route, its request, the planner's turn, its reason), ~35 us per run, so
~0.35 s per pass at 10,000 waiting runs whatever the pass can admit. While the
cluster is full a pass admits only what was just freed, and what it can admit
is found at the head of the queues: the planner takes each project's runs in
queue order and stops admitting a shape once none fits. So between two full
passes a pass may look only at each project's first ``per_project`` queued
runs (queue order: priority, then submission), which costs the same at 100 and
at 100,000 waiting runs.

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

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from shared.placement.placements import HOLDING
from shared.queueing.model import Wait
from shared.queueing.view import View
from shared.state.records import Job, Run, RunStatus

QUEUED = (RunStatus.SUBMITTED, RunStatus.PENDING)


@dataclass(frozen=True)
class Heads:
    view: View
    """The view with only the heads of the queues (and every run not queued)."""
    cut: Mapping[str, int]
    """Project -> its queued runs left out."""
    unseen: bool
    """Some run left out was never decided by a pass (``submitted``)."""


def heads(view: View, per_project: int, order: Callable[[Run], tuple[int, float, str]]) -> Heads:
    """``view`` with each project's first ``per_project`` queued runs in ``order``.

    Every run that is not queued (running, held, finishing) stays, with all jobs, and
    so does a queued one with a job still holding its place (a gang sent back to the
    queue while a pod of it is deleted): the capacity it holds must count.
    """
    queued: dict[str, list[Run]] = {}
    submitted: dict[str, int] = {}
    kept: list[Run] = []
    jobs = view.jobs
    for run in view.runs:
        status = run.status
        if status in QUEUED and not _holds(jobs[run.id]):
            queued.setdefault(run.project, []).append(run)
            if status == RunStatus.SUBMITTED:
                submitted[run.project] = submitted.get(run.project, 0) + 1
        else:
            kept.append(run)
    cut: dict[str, int] = {}
    unseen = False
    for project, runs in queued.items():
        if len(runs) <= per_project:
            kept += runs
            continue
        head = heapq.nsmallest(per_project, runs, key=order)
        kept += head
        cut[project] = len(runs) - len(head)
        among = sum(1 for run in head if run.status == RunStatus.SUBMITTED)
        unseen = unseen or submitted.get(project, 0) > among
    if not cut:
        return Heads(view, {}, unseen=False)
    return Heads(
        View(view.capacity_version, kept, {run.id: jobs[run.id] for run in kept}),
        cut,
        unseen=unseen,
    )


def _holds(jobs: list[Job]) -> bool:
    # A loop, placement first: called for every queued run of every pass (10,000 at depth),
    # whose jobs almost never have a placement.
    for job in jobs:  # noqa: SIM110 (any() over a generator costs twice as much here)
        if job.placement is not None and job.status in HOLDING:
            return True
    return False


def full_pass_due(
    heads: Heads, *, last_full_at: float, now: float, every_s: float, first_decision_s: float
) -> bool:
    """Whether this pass must decide every run rather than the heads only."""
    if not heads.cut:
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
