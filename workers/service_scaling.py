"""Services with ``scaling``: beat moves each one's replica count toward what its traffic asks.

The proxy counts every admitted request in Redis (``shared.services.service_traffic``);
every few seconds this reads the average over the service's window, asks
dstack's rule (``shared.services.service_scaling``) for a count, and moves there:

- **up**: new replica jobs are added to the run in one compare-and-set with the
  run's ``scaled_at`` (``Store.add_jobs``), then the scheduler places them as it
  places any queued job, and the proxy sends them requests once they are ready;
- **down**: the run's ``scaled_at`` is set first (compare-and-set: of two beats,
  one decides), then the replicas last added are retired, those not running yet
  first: stopped, torn down, and no longer counted in the run's status.

Safe to repeat: a second tick sees the count already moved, or the delay not
passed since ``scaled_at``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared import tasks
from shared.configuration.parse import configuration_from_stored
from shared.errors import NotFoundError
from shared.queueing.wake import wake_scheduler
from shared.services import service_traffic
from shared.services.service_scaling import ScalingRule, desired_replicas
from shared.state.jobs import replica_job
from shared.state.lifecycle import can_move
from shared.state.records import Event, Job, Run, RunStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)

SCALED_DOWN = "scaled down: fewer requests than its replicas are for"
_CAS_ATTEMPTS = 10


def scale_services(ctx: WorkerContext, *, now: float | None = None) -> dict[str, int]:
    """Scale every running service that has ``scaling``; run name -> its new replica count."""
    now = time.time() if now is None else now
    moved: dict[str, int] = {}
    for run in ctx.store.active_runs_of("service"):
        if not _scales(run.configuration):
            continue
        try:
            count = scale_service(ctx, run.id, now=now)
        except NotFoundError:
            continue  # deleted since the listing
        if count is not None:
            moved[run.name] = count
    return moved


def scale_service(ctx: WorkerContext, run_id: str, *, now: float) -> int | None:
    """Move one service toward its desired replica count; the new count, or None if unchanged.

    With replica groups, each group with ``scaling`` moves by its own rule on the
    service's requests per second, as dstack does; the delays count from the
    service's last change, whichever group it was.
    """
    run = ctx.store.get_run(run_id)
    if run.status != RunStatus.RUNNING or run.stop_requested:
        return None  # a service still starting has no traffic to size it by yet
    conf: Any = configuration_from_stored(run.configuration)
    rules = rules_of(conf) if conf.type == "service" else {}
    if not rules:
        return None
    jobs = [j for j in ctx.store.jobs_of(run) if not j.retired and not j.status.is_finished]
    window = max(r.window_s for r in rules.values())
    rps = service_traffic.requests_per_second(ctx.store, run.id, window_s=window, now=now)
    last = run.scaled_at or run.submitted_at  # dstack counts the delays from the start too
    added: list[str | None] = []
    retiring: list[Job] = []
    steps: list[str] = []
    for group, scaled in rules.items():
        members = [j for j in jobs if j.group == group]
        wanted = desired_replicas(
            scaled.rule, current=len(members), rps=rps, last_scaled_at=last, now=now
        )
        if wanted == len(members):
            continue
        steps.append(("" if group is None else f"group {group} ") + f"{len(members)} to {wanted}")
        added += [group] * (wanted - len(members))
        retiring += _to_retire(members, len(members) - wanted)
    if not steps:
        return None
    message = f"scaling {', '.join(steps)} replicas ({rps:.2f} requests/s)"
    if not steps[0].startswith("group"):
        message = f"scaling from {steps[0]} replicas ({rps:.2f} requests/s)"
    if added and not _add_replicas(ctx, run, added, message, now=now):
        return None
    if retiring:
        run = ctx.store.get_run(run_id)
        if not _retire_replicas(ctx, run, retiring, message, now=now, noted=bool(added)):
            return None
    log.info("service %s: %s", run.name, message)
    return len(jobs) + len(added) - len(retiring)


@dataclass(frozen=True)
class GroupScaling:
    rule: ScalingRule
    window_s: int


def rules_of(conf: Any) -> dict[str | None, GroupScaling]:
    """Each group's (or, without groups, the service's) ``replicas`` range and ``scaling``
    as the scaler's rule; groups without ``scaling`` keep their count and are left out."""
    groups = conf.groups or [conf]
    return {
        (g.name if conf.groups else None): GroupScaling(rule_of(g), _window(g))
        for g in groups
        if g.scaling is not None
    }


def rule_of(conf: Any) -> ScalingRule:
    """A ``replicas`` range and ``scaling`` (a service's or a replica group's) as the rule."""
    return ScalingRule(
        min_replicas=conf.replicas.min or 0,
        max_replicas=conf.replicas.max,
        target_rps=conf.scaling.target,
        scale_up_delay_s=conf.scaling.scale_up_delay,
        scale_down_delay_s=conf.scaling.scale_down_delay,
    )


def _scales(configuration: dict[str, Any]) -> bool:
    groups = configuration.get("groups") or []
    return bool(configuration.get("scaling")) or any(g.get("scaling") for g in groups)


def _window(conf: Any) -> int:
    return int(conf.scaling.window or service_traffic.DEFAULT_WINDOW_S)


def _to_retire(jobs: list[Job], count: int) -> list[Job]:
    # Replicas not serving yet go first, then the newest: the oldest keep their warm caches.
    order = sorted(jobs, key=lambda j: (j.status == RunStatus.RUNNING, -j.replica_num))
    return order[: max(count, 0)]


def _add_replicas(
    ctx: WorkerContext, run: Run, groups: list[str | None], message: str, *, now: float
) -> bool:
    everyone = ctx.store.jobs_of(run)
    first = max((j.replica_num for j in everyone), default=-1) + 1  # numbers are never reused
    new = [replica_job(run, first + i, group) for i, group in enumerate(groups)]
    updated = run.model_copy(update={"job_ids": [*run.job_ids, *(j.id for j in new)]})
    updated.scaled_at = now
    event = Event(at=now, kind="info", message=message)
    if not ctx.store.add_jobs(updated, new, event):
        return False  # the run changed meanwhile: the next tick decides again
    wake_scheduler(ctx.store, ctx.celery, run.id)
    return True


def _retire_replicas(
    ctx: WorkerContext, run: Run, jobs: list[Job], message: str, *, now: float, noted: bool
) -> bool:
    if not noted:  # adding replicas in the same step already set scaled_at, with the message
        run.scaled_at = now
        if not ctx.store.save_run(run, Event(at=now, kind="info", message=message)):
            return False
    for job in jobs:
        _retire(ctx, job.id, now=now)
    return True


def _retire(ctx: WorkerContext, job_id: str, *, now: float) -> None:
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.retired or not can_move(job.status, RunStatus.TERMINATING):
            return
        job.retired = True
        job.status = RunStatus.TERMINATING
        job.reason = SCALED_DOWN
        event = Event(
            at=now,
            kind="status",
            status=job.status,
            job=job.job_num,
            message=f"replica {job.replica_num} stopping: {SCALED_DOWN}",
        )
        if ctx.store.save_job(job, event):
            tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job.id)
            return
