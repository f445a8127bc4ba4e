"""Following a job placed on an autoscaling pool until a node joins, or the wait ends.

A pod placed on a pool node (see :mod:`shared.placement.autoscaling`) is unschedulable on
purpose until the autoscaler adds a node, so the usual rule (an unschedulable
pod goes back to the queue after a minute) does not apply to it. Instead:

- while the pod is unbound, the job stays ``provisioning`` with the reason
  "waiting for the autoscaler to add a node from pool P";
- after the pool's ``scale_up_timeout`` it fails with the ``no-capacity`` retry
  event, so the run goes back to the queue if its retry policy covers
  ``no-capacity`` (and its retry duration has not passed), and fails otherwise;
- once the pod is bound, the job's placement names the real node, so Berth's
  capacity accounting moves from the pool node to it.
"""

from __future__ import annotations

import time
from typing import Any

from shared.clusters import Cluster
from shared.kube.raw import as_raw, dig, timestamp_of
from shared.placement.autoscaling import find_pool, scale_up_timed_out, waiting_reason
from shared.queueing.limits import NO_CAPACITY
from shared.state.records import Event, Job, RunStatus
from workers import wait_reasons
from workers.context import WorkerContext
from workers.pod_status import PodVerdict

_CAS_ATTEMPTS = 10


def judge_pool_wait(
    ctx: WorkerContext,
    cluster: Cluster,
    job: Job,
    pod: Any,
    verdict: PodVerdict | None,
    *,
    now: float,
) -> PodVerdict | None:
    """The verdict for a job placed on a pool node (``verdict`` is the usual rules')."""
    assert job.placement is not None
    pool = find_pool(cluster.backend.node_pools, job.placement.node)
    if pool is None:
        return verdict  # the pool left the configuration: the usual rules apply
    raw = as_raw(pod)
    node = dig(raw, "spec", "nodeName")
    if node:
        _record_node(ctx, job.id, job.placement.node, node)
        return verdict
    if verdict is not None and verdict.status != RunStatus.PENDING:
        return verdict  # failed before it was ever bound
    since = timestamp_of(dig(raw, "metadata", "creationTimestamp")) or now
    timed_out = scale_up_timed_out(pool, since=since, now=now)
    if timed_out is not None:
        return PodVerdict(RunStatus.FAILED, timed_out, retry_event=NO_CAPACITY)
    wait_reasons.record_waiting(ctx, job.id, waiting_reason(pool), replaces=lambda _r: True)
    return None


def _record_node(ctx: WorkerContext, job_id: str, pool_node: str, node: str) -> None:
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.placement is None or job.placement.node != pool_node:
            return
        job.placement = job.placement.model_copy(update={"node": node, "joined_at": time.time()})
        if job.status == RunStatus.PROVISIONING:
            job.reason = ""
        message = f"job {job.job_num}: the autoscaler added node {node}"
        if ctx.store.save_job(
            job, Event(at=time.time(), kind="info", job=job.job_num, message=message)
        ):
            wait_reasons.set_run_reason(
                ctx, job.run_id, "", replaces=lambda r: r.startswith("waiting for the autoscaler")
            )
            return
