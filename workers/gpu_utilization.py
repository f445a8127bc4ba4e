"""dstack's ``utilization_policy``: stop a run whose GPUs stay idle for ``time_window``.

Where the numbers come from: NVIDIA's DCGM exporter, which the GPU Operator runs
on every GPU node and which labels each GPU's ``DCGM_FI_DEV_GPU_UTIL`` (percent)
with the ``namespace`` and ``pod`` using it. Berth reads each exporter pod's
``/metrics`` through the apiserver's pod proxy (:func:`shared.kube.pod_proxy.scrape_pod`),
so no Prometheus is needed and it works wherever Berth reaches the apiserver.

The rule, per running run with a policy, every ``gpu_metrics.check_interval_s``
(beat): a job is busy when any of its GPUs is at or above ``min_gpu_utilization``;
its idle clock starts when Berth first looks at it and restarts whenever it is
busy. The run stops, with the reason kept, once every job with GPUs has been idle
for ``time_window``. A job the exporter says nothing about is never judged idle:
no number, no verdict. The clocks live in one blob per run, so a second look
within the same second changes nothing, and any worker may look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from shared.clusters import run_clusters
from shared.configuration.parse import configuration_from_stored
from shared.errors import BerthError
from shared.kube import Kube
from shared.kube.pod_proxy import scrape_pod
from shared.settings import GpuMetricsSettings
from shared.state.records import Run, RunStatus
from workers import requeue
from workers.context import WorkerContext

log = logging.getLogger(__name__)

METRIC = "DCGM_FI_DEV_GPU_UTIL"
Utilisation = Mapping[tuple[str, str], list[float]]
"""(namespace, pod) -> the utilisation of each GPU the pod uses, percent."""


def check_utilization(ctx: WorkerContext, *, now: float | None = None) -> list[str]:
    """One look at every running run with ``utilization_policy``; the runs it stopped."""
    metrics = ctx.settings.gpu_metrics
    if metrics.exporter_namespace is None:
        return []
    now = time.time() if now is None else now
    runs = [
        r
        for r in ctx.store.find_runs(ctx.store.active_run_ids())
        if r.status == RunStatus.RUNNING
        and not r.stop_requested
        and r.configuration.get("utilization_policy")
    ]
    stopped: list[str] = []
    read: dict[str, Utilisation] = {}  # per cluster: one scrape however many runs ask
    for run in runs:
        try:
            # A run keeps to one cluster: its exporter is read there.
            where = run_clusters(ctx.store.jobs_of(run))[0]
            cluster = ctx.clusters.for_project(run.project, where)
            key = cluster.backend.cluster_key()
            if key not in read:
                read[key] = read_utilization(cluster.kube, metrics)
            if judge_run(ctx, run, cluster.namespace, read[key], now=now):
                stopped.append(run.name)
        except BerthError as e:
            log.info("cannot judge the GPU utilisation of run %s now: %s", run.name, e)
    return stopped


def judge_run(
    ctx: WorkerContext, run: Run, namespace: str, utilisation: Utilisation, *, now: float
) -> bool:
    """Move ``run``'s idle clocks; stop it if every GPU job idled ``time_window``."""
    policy = getattr(configuration_from_stored(run.configuration), "utilization_policy", None)
    if policy is None:
        return False
    jobs = ctx.store.jobs_of(run)
    gpu_jobs = [
        j
        for j in jobs
        if j.status == RunStatus.RUNNING and j.pod_name and j.placement and j.placement.gpus
    ]
    blob = f"gpu-busy:{run.id}"
    busy = {k: float(v) for k, v in (ctx.store.get_blob(blob) or {}).items()}
    idle = bool(gpu_jobs)
    for job in gpu_jobs:
        since = busy.setdefault(job.id, now)  # first look: the clock starts now
        seen = utilisation.get((namespace, str(job.pod_name)))
        if seen is None:
            idle = False  # the exporter says nothing of this pod: no verdict
        elif any(u >= policy.min_gpu_utilization for u in seen):
            busy[job.id] = now
            idle = False
        elif now - since < policy.time_window:
            idle = False
    ctx.store.put_blob(blob, busy)
    if not idle:
        return False
    reason = (
        f"GPU utilisation stayed below {policy.min_gpu_utilization}% for"
        f" {policy.time_window} s (utilization_policy)"
    )
    log.info("stopping run %s: %s", run.name, reason)
    return requeue.stop_for_limit(ctx, run, jobs, reason)


def read_utilization(k: Kube, metrics: GpuMetricsSettings) -> Utilisation:
    """Every exporter pod's GPU utilisation by the pod each GPU serves."""
    assert metrics.exporter_namespace is not None
    namespace = metrics.exporter_namespace
    pods = k.call(
        k.core.list_namespaced_pod,
        namespace,
        label_selector=metrics.exporter_selector,
        _request_timeout=metrics.timeout_s,
    ).items
    found: dict[tuple[str, str], list[float]] = {}
    for pod in pods:
        if not _ready(pod):  # starting or failing its probe: nothing to read yet
            continue
        try:
            text = scrape_pod(k, namespace, pod.metadata.name, metrics.exporter_port, "metrics")
        except BerthError as e:  # one exporter away does not blind the others
            log.info("DCGM exporter %s unreadable: %s", pod.metadata.name, e)
            continue
        for key, value in parse_utilization(text):
            found.setdefault(key, []).append(value)
    return found


def _ready(pod: Any) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def parse_utilization(text: str) -> Iterable[tuple[tuple[str, str], float]]:
    """((namespace, pod), percent) per GPU in an exporter's metrics text. Pure."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != METRIC:
                continue
            labels = sample.labels
            # Scraped through Prometheus the exporter's labels come back as exported_*.
            namespace = labels.get("namespace") or labels.get("exported_namespace")
            pod = labels.get("pod") or labels.get("exported_pod")
            if namespace and pod:
                yield (namespace, pod), float(sample.value)
