"""A run's events: Berth's own (stored with the run) and, on request, Kubernetes' about
its pods (Scheduled, Pulled, OOMKilling, Evicted, FailedScheduling...), in time order.

Kubernetes keeps events for an hour by default and only while it wants to, so they are
read live and shown when they exist; Berth's events are kept with the run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from api.schemas import EventPublic
from shared.clusters import ClusterRegistry
from shared.errors import ConfigError, KubeError
from shared.kube.names import job_pod_name
from shared.state.records import Run
from shared.state.store import Store

log = logging.getLogger(__name__)

_MAX_PODS = 16  # one events read per pod; a larger run's first ranks tell the story


def run_events(
    store: Store, clusters: ClusterRegistry, run: Run, *, after: str, kubernetes: bool
) -> list[EventPublic]:
    events = [
        EventPublic(id=i, at=e.at, kind=e.kind, message=e.message, status=e.status, job=e.job)
        for i, e in store.events(run.id, after=after)
    ]
    if kubernetes:
        events += _pod_events(store, clusters, run)
        events.sort(key=lambda e: e.at)
    return events


def _pod_events(store: Store, clusters: ClusterRegistry, run: Run) -> list[EventPublic]:
    found: list[EventPublic] = []
    for job in store.jobs_of(run)[:_MAX_PODS]:
        try:
            cluster = clusters.for_job(job)
        except ConfigError:
            return found
        k = cluster.kube
        pod = job_pod_name(job)
        try:
            listed = k.call(
                k.core.list_namespaced_event,
                cluster.namespace,
                field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}",
            )
        except KubeError as e:
            found.append(_unavailable(e, job.job_num))
            break
        found += [_public(ev, job.job_num) for ev in listed.items]
    return found


def _public(ev: Any, job: int) -> EventPublic:
    when = ev.last_timestamp or ev.event_time or ev.first_timestamp
    count = f" (x{ev.count})" if (ev.count or 1) > 1 else ""
    return EventPublic(
        id=f"k8s-{ev.metadata.uid}",
        at=when.timestamp() if when else 0.0,
        kind=ev.reason or "",
        message=f"{ev.message or ''}{count}",
        status=None,
        job=job,
        source="kubernetes",
    )


def _unavailable(e: KubeError, job: int) -> EventPublic:
    return EventPublic(
        id="k8s-unavailable",
        at=time.time(),
        kind="unavailable",
        message=f"Kubernetes events cannot be read: {e}",
        status=None,
        job=job,
        source="kubernetes",
    )
