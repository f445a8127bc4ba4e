"""The run and job state machine, as pure functions.

States only move forward along ``submitted < pending < provisioning < running
< terminating < (done | failed | terminated)``, possibly skipping some. The
one step back is provisioning -> pending: a pod that Kubernetes never
scheduled returns to the queue with a reason. Finished states are final.
Workers apply a move with compare-and-set, so a late or duplicate message that
asks for a backward move is refused here and becomes a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.state.records import FINISHED, RunStatus

S = RunStatus

_RANK = {
    S.SUBMITTED: 0,
    S.PENDING: 1,
    S.PROVISIONING: 2,
    S.RUNNING: 3,
    S.TERMINATING: 4,
    S.DONE: 5,
    S.FAILED: 5,
    S.TERMINATED: 5,
}


def can_move(current: RunStatus, target: RunStatus) -> bool:
    """True when ``current -> target`` is allowed by the state machine."""
    if current in FINISHED:
        return False
    if current == S.PROVISIONING and target == S.PENDING:
        return True
    return _RANK[target] > _RANK[current]


def run_status_from_jobs(jobs: Iterable[RunStatus], *, stop_requested: bool) -> RunStatus:
    """A run's status, derived from its jobs' statuses.

    - any job failed: the run failed (a multi-node task is all or nothing);
    - all finished: done, or terminated if the user stopped it;
    - otherwise the least advanced active state wins, so "running" means all run.
    """
    states = list(jobs)
    if not states:
        return S.SUBMITTED
    if S.FAILED in states:
        return S.FAILED
    if all(s in FINISHED for s in states):
        return S.TERMINATED if stop_requested or S.TERMINATED in states else S.DONE
    if stop_requested or S.TERMINATING in states:
        return S.TERMINATING
    for s in (S.SUBMITTED, S.PENDING, S.PROVISIONING):
        if s in states:
            return s
    return S.RUNNING
