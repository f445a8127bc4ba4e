"""Jobs the kube-scheduler places (namespace-only mode): their affinity and their wait.

In namespace-only mode (:mod:`shared.policy.access`) a job's placement names
:data:`~shared.queueing.namespace_only.SCHEDULER_NODE`, not a node. Two things
follow, both here:

- :func:`scheduler_affinity`: the pod asks for its GPU model and memory by node
  affinity on the GPU labels (:mod:`shared.gpu.affinity`), and for its instance
  types, zones and regions on the well-known labels (:mod:`shared.placement.locality`); a multi-node
  run's pods repel each other across nodes (``nodes: N`` means N nodes);
- :func:`judge_scheduler_wait`: an unbound pod is the scheduler looking for a
  node, not Berth's mistake, so the usual rule (unschedulable for a minute: back
  to the queue) does not apply; the job stays ``provisioning`` and shows the
  scheduler's own FailedScheduling message, for as long as the run's limits
  allow (a gang still answers to ``gang_ready_timeout_s``, and ``retry`` with
  ``no-capacity`` and a ``duration`` bounds the wait). Once bound, the job
  records its real node, so ``berth ps`` shows where it runs.
"""

from __future__ import annotations

import time
from typing import Any

from shared import kube
from shared.clusters import Cluster
from shared.errors import KubeError
from shared.gpu.affinity import gpu_node_affinity
from shared.kube.raw import Raw, as_raw, dig, timestamp_of
from shared.placement.locality import Where
from shared.placement.requests import request_for
from shared.state.records import Event, Job, Run, RunStatus
from workers import wait_reasons
from workers.context import WorkerContext
from workers.pod_status import PodVerdict

_CAS_ATTEMPTS = 10
_HOSTNAME = "kubernetes.io/hostname"  # the well-known label every kubelet sets
_WAITING = "waiting for the kube-scheduler"


def scheduler_affinity(run: Run, conf: Any) -> dict[str, Any]:
    """The pod's affinity; ValueError naming the GPU when no label value names it."""
    request = request_for(conf)
    affinity: dict[str, Any] = dict(gpu_node_affinity(request) or {})
    if request.where is not None:
        affinity["nodeAffinity"] = where_affinity(affinity.get("nodeAffinity"), request.where)
    nodes = int(getattr(conf, "nodes", 1) or 1)
    if nodes > 1:
        labels = kube.berth_labels(run.project, run.name)
        same_run = {k: labels[k] for k in (kube.LABEL_PROJECT, kube.LABEL_RUN)}
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": same_run}, "topologyKey": _HOSTNAME}
            ]
        }
    return affinity


def where_affinity(node_affinity: dict[str, Any] | None, where: Where) -> dict[str, Any]:
    """``node_affinity`` with ``where``'s labels required too: terms are ORed and the
    expressions inside one ANDed, so each term (one per GPU label scheme) gets them all,
    once per cloud ``backends`` names (ValueError for a cloud no label names)."""
    required = (node_affinity or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or [{"matchExpressions": []}]
    labels = where.match_expressions()
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [*t["matchExpressions"], *labels, *cloud]}
                for t in terms
                for cloud in where.backend_terms()
            ]
        }
    }


def judge_scheduler_wait(
    ctx: WorkerContext,
    cluster: Cluster,
    job: Job,
    pod: Any,
    verdict: PodVerdict | None,
    *,
    now: float,
) -> PodVerdict | None:
    """The verdict for a job whose pod the kube-scheduler places (``verdict``: the usual)."""
    raw = as_raw(pod)
    node = dig(raw, "spec", "nodeName")
    if node:
        _record_node(ctx, job.id, node)
        return verdict
    if verdict is not None and verdict.status != RunStatus.PENDING:
        return verdict  # failed before it was ever bound (image, admission)
    message = _scheduler_message(cluster, raw) or _condition_message(raw)
    reason = f"{_WAITING}: {message}" if message else _WAITING
    wait_reasons.record_waiting(ctx, job.id, reason, replaces=_ours)
    return None


def _scheduler_message(cluster: Cluster, raw: Raw) -> str | None:
    """The pod's latest FailedScheduling event, the scheduler's own words."""
    k = cluster.kube
    name = dig(raw, "metadata", "name")
    selector = f"involvedObject.name={name},involvedObject.kind=Pod,reason=FailedScheduling"
    try:
        events = k.call(k.core.list_namespaced_event, cluster.namespace, field_selector=selector)
    except KubeError:
        return None  # may not list events: the pod's condition says much the same
    latest = max(
        events.items or [],
        key=lambda e: (
            timestamp_of(e.last_timestamp or e.event_time or e.metadata.creation_timestamp) or 0.0
        ),
        default=None,
    )
    return str(latest.message).strip() if latest is not None and latest.message else None


def _condition_message(raw: Raw) -> str | None:
    for cond in dig(raw, "status", "conditions") or ():
        scheduled = cond.get("type") == "PodScheduled" and cond.get("status") == "False"
        if scheduled and cond.get("message"):
            return str(cond["message"])
    return None


def _record_node(ctx: WorkerContext, job_id: str, node: str) -> None:
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.placement is None or job.placement.node == node:
            return
        job.placement = job.placement.model_copy(update={"node": node})
        if job.status == RunStatus.PROVISIONING and job.reason.startswith(_WAITING):
            job.reason = ""
        message = f"job {job.job_num}: the kube-scheduler bound its pod to node {node}"
        if ctx.store.save_job(
            job, Event(at=time.time(), kind="info", job=job.job_num, message=message)
        ):
            wait_reasons.set_run_reason(ctx, job.run_id, "", replaces=_ours)
            return


def _ours(reason: str) -> bool:
    """A run reason this module may overwrite: none, or its own wait."""
    return not reason or reason.startswith(_WAITING)
