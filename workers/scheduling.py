"""The scheduling pass: place pending runs on nodes, all jobs of a run or none.

One pass at a time per cluster (a Redis lock), so two workers never hand out
the same GPUs. Capacity is the inventory's free resources, which count only
pods Berth did not create, minus the placements of Berth's own active jobs
taken from the store: a job's GPUs are reserved from the moment it is placed,
before its pod exists, and released when the job finishes.

Order is priority (high first), then submission time. A run that does not
fit stays ``pending`` with the reason and its position; one that could never
fit fails at once as impossible.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from shared import placements, tasks
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError, TemporaryError
from shared.fleets import allowed_nodes
from shared.gpu.inventory import GpuInventory, Resources
from shared.inventory_store import load_inventory
from shared.jobs import refresh_run
from shared.lifecycle import can_move
from shared.offers import Request, Verdict, match
from shared.records import Event, Job, Placement, Run, RunStatus
from shared.requests import request_for
from workers.context import WorkerContext

log = logging.getLogger(__name__)

_LOCK_TTL_S = 30  # a crashed pass frees the lock after this; a pass takes milliseconds
_LOCK_WAIT_S = 10  # a second pass waits this long, then the message is retried


@dataclass
class PassResult:
    placed: list[str]
    pending: list[str]
    failed: list[str]


def schedule_pass(ctx: WorkerContext) -> PassResult:
    """Place every pending run that fits, in queue order."""
    store = ctx.store
    lock = store.r.lock(
        store.key("lock", "scheduling"), timeout=_LOCK_TTL_S, blocking_timeout=_LOCK_WAIT_S
    )
    result = PassResult(placed=[], pending=[], failed=[])
    if not lock.acquire():
        raise TemporaryError("another scheduling pass is running", delay=1)
    try:
        active = [r for r in map(store.find_run, store.active_run_ids()) if r is not None]
        jobs = {r.id: store.jobs_of(r) for r in active}
        reserved = placements.reserved(j for js in jobs.values() for j in js)
        queue = sorted(
            (
                r
                for r in active
                if r.status in (RunStatus.SUBMITTED, RunStatus.PENDING) and not r.stop_requested
            ),
            key=lambda r: (-r.priority, r.submitted_at),
        )
        inventories: dict[str, GpuInventory] = {}
        for position, run in enumerate(queue, start=1):
            inventory = inventories.get(run.project)
            if inventory is None:
                inventory = inventories[run.project] = load_inventory(
                    ctx.store, ctx.clusters, run.project
                )
            conf = configuration_from_stored(run.configuration)
            request = request_for(conf)
            fleets = getattr(conf, "fleets", None)
            if fleets:
                try:
                    allowed = allowed_nodes(store, inventory, run.project, fleets)
                except ConfigError as e:
                    _fail(ctx, run, jobs[run.id], str(e))
                    result.failed.append(run.name)
                    continue
                request = replace(request, allowed_nodes=allowed)
            verdict = match(inventory, request, reserved=reserved)
            if not verdict.possible:
                _fail(ctx, run, jobs[run.id], verdict.reason)
                result.failed.append(run.name)
            elif len(verdict.offers) >= request.nodes:
                _place(ctx, run, jobs[run.id], verdict, request, reserved)
                result.placed.append(run.name)
            else:
                _wait(ctx, run, jobs[run.id], f"{verdict.reason} (position {position} in queue)")
                result.pending.append(run.name)
    finally:
        try:
            lock.release()
        except Exception:
            log.warning("scheduling lock expired before release")
    return result


def _place(
    ctx: WorkerContext,
    run: Run,
    jobs: list[Job],
    verdict: Verdict,
    request: Request,
    reserved: dict[str, Resources],
) -> None:
    by_replica: dict[int, list[Job]] = {}
    for job in jobs:
        by_replica.setdefault(job.replica_num, []).append(job)
    offers = iter(verdict.offers)
    now = time.time()
    for replica_jobs in by_replica.values():
        for job, offer in zip(sorted(replica_jobs, key=lambda j: j.job_num), offers, strict=False):
            placement = Placement(
                node=offer.node,
                gpu_resource=offer.group.resource if offer.group else None,
                gpus=offer.gpus,
                cpu_milli=request.cpu_millicores,
                memory_bytes=request.memory_bytes,
            )
            if not can_move(job.status, RunStatus.PROVISIONING):
                continue
            job.status = RunStatus.PROVISIONING
            job.placement = placement
            job.reason = ""
            event = Event(
                at=now,
                kind="status",
                status=job.status,
                job=job.job_num,
                message=f"job {job.job_num} placed on {offer.node} ({offer.gpus} GPU)",
            )
            if ctx.store.save_job(job, event):
                reserved[offer.node] = placements.add(reserved.get(offer.node), placement)
                tasks.send(ctx.celery, tasks.PROVISION_JOB, job.id)
    refresh_run(ctx.store, run.id)


def _wait(ctx: WorkerContext, run: Run, jobs: list[Job], reason: str) -> None:
    changed = False
    for job in jobs:
        if job.status == RunStatus.PENDING and job.reason == reason:
            continue
        if job.status not in (RunStatus.SUBMITTED, RunStatus.PENDING):
            continue
        first = job.status == RunStatus.SUBMITTED
        job.status = RunStatus.PENDING
        job.reason = reason
        event = (
            Event(
                at=time.time(),
                kind="status",
                status=job.status,
                job=job.job_num,
                message=f"pending: {reason}",
            )
            if first
            else None
        )
        changed |= ctx.store.save_job(job, event)
    if changed:
        refreshed = refresh_run(ctx.store, run.id)
        if refreshed.reason != reason and refreshed.status == RunStatus.PENDING:
            refreshed.reason = reason
            ctx.store.save_run(refreshed)


def _fail(ctx: WorkerContext, run: Run, jobs: list[Job], reason: str) -> None:
    for job in jobs:
        if not can_move(job.status, RunStatus.FAILED):
            continue
        job.status = RunStatus.FAILED
        job.reason = reason
        ctx.store.save_job(
            job,
            Event(
                at=time.time(), kind="status", status=job.status, job=job.job_num, message=reason
            ),
        )
    refresh_run(ctx.store, run.id)
