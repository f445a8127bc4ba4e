"""What Berth's own jobs hold: capacity reserved from placement until they finish.

The scheduler and the offers view both subtract this from the inventory's free
resources (which count only pods Berth did not create), so GPUs are taken the
moment a job is placed, before its pod exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.gpu.inventory import Resources
from shared.state.records import Job, Placement, Run, RunStatus
from shared.state.store import Store

HOLDING = frozenset({RunStatus.PROVISIONING, RunStatus.RUNNING, RunStatus.TERMINATING})


def active_runs(store: Store) -> list[tuple[Run, list[Job]]]:
    """Every unfinished run with its jobs, in two round trips."""
    runs = store.find_runs(store.active_run_ids())
    jobs = store.jobs_of_runs(runs)
    return [(run, jobs[run.id]) for run in runs]


def reserved(jobs: Iterable[Job]) -> dict[str, Resources]:
    """Per node, the sum of the placements of jobs that hold (or will hold) a pod."""
    totals: dict[str, Resources] = {}
    for job in jobs:
        if job.status in HOLDING and job.placement is not None:
            node = job.placement.node
            totals[node] = add(totals.get(node), job.placement)
    return totals


def add(current: Resources | None, placement: Placement) -> Resources:
    current = current or Resources()
    gpus = dict(current.gpus)
    if placement.gpu_resource:
        gpus[placement.gpu_resource] = gpus.get(placement.gpu_resource, 0) + placement.gpus
    return Resources(
        cpu_millicores=current.cpu_millicores + placement.cpu_milli,
        memory_bytes=current.memory_bytes + placement.memory_bytes,
        ephemeral_storage_bytes=current.ephemeral_storage_bytes + placement.disk_bytes,
        gpus=gpus,
    )
