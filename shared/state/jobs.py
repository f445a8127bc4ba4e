"""Turning a run into jobs, and a run's status back out of its jobs."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.configuration.groups import node_group_of
from shared.state.lifecycle import can_move, run_status_from_jobs
from shared.state.records import Event, Job, Run, RunStatus
from shared.state.store import Store

_CAS_ATTEMPTS = 20  # concurrent job updates of one run settle well within this


def jobs_for(run: Run, conf: Any) -> list[Job]:
    """One job per node of a task, per replica of a service, one for a dev environment.

    Each job names its group, if the configuration has groups: a task's ranks run
    through its node groups in order, a service starts each replica group's
    ``min`` replicas (at least one replica in all, as without groups).
    """
    nodes = int(getattr(conf, "nodes", 1) or 1) if conf.type == "task" else 1
    groups = _replica_groups(conf) if conf.type == "service" else [None]
    return [
        Job(
            id=uuid.uuid4().hex,
            run_id=run.id,
            project=run.project,
            run_name=run.name,
            job_num=node,
            replica_num=replica,
            jobs_in_run=nodes,
            group=group if conf.type == "service" else node_group_of(conf, node),
            submitted_at=run.submitted_at,
        )
        for replica, group in enumerate(groups)
        for node in range(nodes)
    ]


def refresh_run(store: Store, run_id: str) -> Run:
    """Recompute the run's status from its jobs and save it if it changed.

    Called after every job update; safe to call any number of times.
    """
    run = store.get_run(run_id)
    for _ in range(_CAS_ATTEMPTS):
        jobs = store.jobs_of(run)
        status = status_behind(run, jobs)
        if status is None:
            return run
        reason = next((j.reason for j in jobs if j.status == status and j.reason), "")
        run.status = status
        run.reason = reason
        msg = f"run {status}" + (f": {reason}" if reason else "")
        if store.save_run(run, Event(at=time.time(), kind="status", status=status, message=msg)):
            return run
        run = store.get_run(run_id)
    return run


def status_behind(run: Run, jobs: list[Job]) -> RunStatus | None:
    """The status ``run`` should have by its ``jobs``, if it lags behind them; else None.

    Lagging is normal for a moment (a job is written, then its run), and lasting only
    if the run's write was lost (a Redis failover drops the last writes the old
    primary took): beat's sweep calls :func:`refresh_run` for such runs.
    """
    # Replicas a service scaled down are gone by design: they say nothing of the run.
    live = [j for j in jobs if not j.retired]
    if not live and not run.stop_requested:
        return None  # a service scaled to zero replicas is still up, waiting for requests
    states = [j.status for j in live] or [RunStatus.TERMINATED]
    status = run_status_from_jobs(states, stop_requested=run.stop_requested)
    if status == run.status or not can_move(run.status, status):
        return None
    return status


def replica_job(run: Run, replica_num: int, group: str | None = None) -> Job:
    """One more replica of a service (``scaling``), queued like a new run's job."""
    return Job(
        id=uuid.uuid4().hex,
        run_id=run.id,
        project=run.project,
        run_name=run.name,
        replica_num=replica_num,
        group=group,
        submitted_at=time.time(),
    )


def _replica_groups(conf: Any) -> list[str | None]:
    """The group of each replica a service starts with, in replica order."""
    groups = getattr(conf, "groups", None)
    if not groups:
        return [None] * _replicas(conf)
    starts = [(g.name, g.replicas.min or 0) for g in groups]
    if not any(count for _, count in starts):
        starts[0] = (starts[0][0], 1)  # as without groups: a service starts with a replica
    return [name for name, count in starts for _ in range(count)]


def _replicas(conf: Any) -> int:
    replicas = getattr(conf, "replicas", 1)
    if isinstance(replicas, int):
        return max(replicas, 1)
    low = getattr(replicas, "min", None)
    return max(int(low or 1), 1)
