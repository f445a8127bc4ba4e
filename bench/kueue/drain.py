"""One drain, measured the same way for either system from the apiserver's side.

The shape, for Berth and for Kueue alike:

1. **Fill.** One-GPU *blockers* that never finish take every GPU of the cluster.
2. **Submit.** ``n`` one-GPU jobs of ``run_for`` seconds each (KWOK completes
   their pods, ``cli/local/kwok-stages.yaml``), through the system's own front
   door, while nothing can start: all ``n`` wait, the queue is at full depth.
3. **Release** (t0). The blockers are stopped or deleted, the system's own way;
   right after, one high-priority job is submitted at depth.
4. **Drain.** Until every job's pod has succeeded.

A watch on the namespace's pods (and, for Kueue, its Jobs) records when each
job's pod was first seen, its node, and when it was seen Succeeded. Admission
is the first thing both systems make visible: the job's pod created (Berth
creates the pod when it admits; Kueue unsuspends the Job and the
controller-manager's Job controller creates the pod, so for Kueue the Job's
unsuspension is recorded too). A freed GPU is paired with the next pod created
on a node of the same GPU model (the quota both systems keep is per model).
"""

from __future__ import annotations

import math
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, watch

from bench.common import pct
from shared import kube

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU Feature Discovery's (cli/local/nodes.py)


@dataclass
class Timeline:
    """Monotonic seconds, keyed by job name."""

    created: dict[str, float] = field(default_factory=dict)
    node: dict[str, str] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    admitted: dict[str, float] = field(default_factory=dict)
    """Kueue only: when the Job was first seen unsuspended."""
    completed: dict[str, float] = field(default_factory=dict)
    """Kueue only: when the Job was first seen with its Complete condition."""


class Watches:
    """Pods (and optionally batch Jobs) of one namespace, into a :class:`Timeline`."""

    def __init__(
        self, k: kube.Kube, namespace: str, key_of: Callable[[Any], str | None], *, jobs: bool
    ) -> None:
        self.timeline = Timeline()
        self._k = k
        self._ns = namespace
        self._key_of = key_of
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pods, daemon=True, name="peers-pods")]
        if jobs:
            self._threads.append(
                threading.Thread(target=self._jobs, daemon=True, name="peers-jobs")
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def count(self, what: str, names: set[str]) -> int:
        with self._lock:
            return len(names & getattr(self.timeline, what).keys())

    def _pods(self) -> None:
        self._follow(self._k.core.list_namespaced_pod, self._pod)

    def _jobs(self) -> None:
        self._follow(client.BatchV1Api(self._k.api).list_namespaced_job, self._job)

    def _follow(self, list_fn: Callable[..., Any], on: Callable[[Any, float], None]) -> None:
        rv = self._k.call(list_fn, self._ns).metadata.resource_version
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    list_fn, self._ns, resource_version=rv, timeout_seconds=5, _request_timeout=15
                ):
                    obj = event["object"]
                    rv = obj.metadata.resource_version
                    on(obj, time.monotonic())
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception as e:  # any broken watch is resumed (relisted on 410), never fatal
                if "410" in str(e) or "Expired" in str(e):
                    rv = self._k.call(list_fn, self._ns).metadata.resource_version

    def _pod(self, pod: Any, now: float) -> None:
        key = self._key_of(pod)
        if key is None:
            return
        t = self.timeline
        with self._lock:
            t.created.setdefault(key, now)
            if pod.spec.node_name and key not in t.node:
                t.node[key] = pod.spec.node_name
            if pod.status and pod.status.phase == "Succeeded":
                t.done.setdefault(key, now)

    def _job(self, job: Any, now: float) -> None:
        name = job.metadata.name
        conditions = (job.status.conditions if job.status else None) or []
        with self._lock:
            if job.spec.suspend is False:
                self.timeline.admitted.setdefault(name, now)
            if any(c.type == "Complete" and c.status == "True" for c in conditions):
                self.timeline.completed.setdefault(name, now)


@dataclass
class Drain:
    """What one system did with one drain; times are monotonic seconds."""

    system: str
    n: int
    jobs: list[str]
    timeline: Timeline
    submit_s: float
    released_at: float
    urgent: str
    urgent_sent_at: float
    finished: bool
    cpu: dict[str, float]
    """Seconds of CPU per process over submit + drain."""
    rss_mib: dict[str, float]
    models: dict[str, str]
    """Node name -> GPU model."""
    requests: dict[str, float] = field(default_factory=dict)
    """apiserver requests over submit + drain, by "verb resource[/subresource]"."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rates:
    depth_per_s: float
    drain_per_s: float
    handover_depth: list[float]
    handover_all: list[float]
    urgent_s: float
    urgent_overtaken: int
    """Jobs whose pods were created after the high-priority job was sent and before its pod."""


def rates(d: Drain, times: dict[str, float] | None = None) -> Rates:
    """Admissions/s at depth (until 10% of ``n`` are admitted: >= 90% still wait) and over
    the whole drain, from first to last admission; hand-overs; the urgent job's wait."""
    at = times if times is not None else d.timeline.created
    ordered = sorted(at[j] for j in d.jobs if j in at)
    deep = max(2, d.n // 10)
    depth = _rate(ordered[:deep])
    drain = _rate(ordered) if len(ordered) == d.n else math.nan
    depth_end = ordered[deep - 1] if len(ordered) >= deep else math.inf
    handover_all = _handovers(d, until=math.inf)
    handover_depth = _handovers(d, until=depth_end)
    urgent_at = d.timeline.created.get(d.urgent)
    urgent_s = urgent_at - d.urgent_sent_at if urgent_at is not None else math.nan
    overtaken = (
        sum(1 for j in d.jobs if d.urgent_sent_at <= d.timeline.created.get(j, -1) < urgent_at)
        if urgent_at is not None
        else -1
    )
    return Rates(depth, drain, handover_depth, handover_all, urgent_s, overtaken)


def lags(d: Drain, start: dict[str, float], end: dict[str, float]) -> list[float]:
    """Per job, ``end - start`` where both were seen (a stage of one system's path)."""
    return [end[j] - start[j] for j in d.jobs if j in start and j in end]


def _rate(times: list[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return (len(times) - 1) / (times[-1] - times[0])


def _handovers(d: Drain, *, until: float) -> list[float]:
    """For each job pod that succeeded before ``until``, the wait until the next pod
    created (after it) on a node of the same GPU model; each new pod pairs once."""
    t = d.timeline
    jobs = set(d.jobs) | {d.urgent}
    created = sorted(
        (t.created[j], d.models.get(t.node.get(j, ""), "")) for j in jobs if j in t.created
    )
    taken = [False] * len(created)
    delays = []
    for freed_at, job in sorted((t.done[j], j) for j in d.jobs if j in t.done):
        if freed_at > until:
            break
        model = d.models.get(t.node.get(job, ""), "")
        for i, (at, m) in enumerate(created):
            if not taken[i] and at >= freed_at and m == model:
                taken[i] = True
                delays.append(at - freed_at)
                break
    return delays


def apiserver_requests(url: str, token: str, ca_file: str) -> dict[str, float]:
    """The apiserver's request counters (``apiserver_request_total``) by verb and resource,
    and its webhook calls (``apiserver_admission_webhook_admission_duration_seconds_count``)
    as "WEBHOOK <name>"; a delta of two reads says what a drain cost it."""
    text = httpx.get(
        f"{url}/metrics",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=ca_file),
        timeout=30,
    ).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(_LABEL.findall(line))
            sub = labels.get("subresource", "")
            key = f"{labels.get('verb', '')} {labels.get('resource', '')}" + (
                f"/{sub}" if sub else ""
            )
        elif line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{"):
            key = f"WEBHOOK {dict(_LABEL.findall(line)).get('name', '')}"
        else:
            continue
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def p(values: list[float], q: float) -> float:
    return pct(values, q)


def node_models(k: kube.Kube) -> dict[str, str]:
    return {
        n.metadata.name: (n.metadata.labels or {}).get(GPU_PRODUCT_LABEL, "")
        for n in k.call(k.core.list_node).items
    }


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    stall: Callable[[], int],
    stall_s: float = 120.0,
) -> bool:
    """Poll until ``predicate`` (True), ``timeout``, or ``stall()`` has not grown in
    ``stall_s`` seconds (stuck)."""
    deadline = time.monotonic() + timeout
    last, moved = stall(), time.monotonic()
    while time.monotonic() < deadline:
        if predicate():
            return True
        now = stall()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            return False
        time.sleep(0.2)
    return False


def first_finish_s(n: int) -> float:
    """How long a drain of ``n`` jobs may go without one finishing before it is called
    stuck. Kueue admits nothing until its Job reconciler (5 workers as shipped) has made a
    Workload for every Job submitted before the blockers went: about two minutes for
    10,000 here, so a fixed 2-minute limit ended its fair drains as stalls (the fifteenth
    and sixteenth sessions' pairs: 0 of 10,001 finished, its manager idle after that)."""
    return max(120.0, 0.05 * n)
