"""Prometheus metrics, defined once; each process exposes what it records.

- The API serves ``/metrics`` with its own counters plus a collector that reads
  the store at scrape time: runs by status and project, queue depth and age,
  inventory freshness and jump-host health (so no process has to push them).
- Workers and the proxy worker serve their counters and histograms on
  ``metrics.port`` (one port per process; 0 turns it off).

Labels never carry names users choose beyond project and status, nor any token
or kubeconfig content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.state.records import RunStatus
from shared.state.store import Store

log = logging.getLogger(__name__)

KUBE_ERRORS = Counter(
    "berth_kubernetes_api_errors_total",
    "Kubernetes API calls that failed, by HTTP status (0 = unreachable).",
    ["code"],
)
SUBMIT_TO_RUNNING = Histogram(
    "berth_submit_to_running_seconds",
    "From the API accepting a run to its job's pod Running.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
SCHEDULING_PASSES = Histogram(
    "berth_scheduling_pass_seconds",
    "Scheduling passes and their wall time, by kind: quick (the heads of deep queues"
    " only) or full (every waiting run).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TASKS = Counter(
    "berth_tasks_total",
    "Celery tasks run by Berth workers, by task and outcome.",
    ["task", "outcome"],
)
LOG_LINES_MISSING = Counter(
    "berth_log_lines_missing_total",
    "Lines run containers counted in their output that the kubelet never served to the"
    " log collector (lost at a log rotation, or rotated away before it read them).",
)
LOG_LINES_RECOVERED = Counter(
    "berth_log_lines_recovered_total",
    "Lines the kubelet never served that the log collector put back in place from the"
    " container's own copy, while it held on at its end (workers/collector/recovery.py).",
)


def serve(port: int) -> None:
    """Expose this process's metrics on 127.0.0.1:``port`` (0: do nothing)."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as e:  # a second process on the same port: keep running without metrics
        log.warning("metrics port %s unavailable: %s", port, e)


class StoreCollector(Collector):
    """Gauges computed from the store at scrape time (the API registers it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily(
            "berth_runs", "Unfinished runs by status and project.", labels=["project", "status"]
        )
        depth = GaugeMetricFamily(
            "berth_queue_depth", "Runs waiting for capacity, by project.", labels=["project"]
        )
        age = GaugeMetricFamily(
            "berth_queue_oldest_age_seconds",
            "Age of the oldest waiting run, by project.",
            labels=["project"],
        )
        now = time.time()
        counts: dict[tuple[str, str], int] = {}
        waiting: dict[str, list[float]] = {}
        for run in self.store.find_runs(self.store.active_run_ids()):
            counts[(run.project, run.status.value)] = (
                counts.get((run.project, run.status.value), 0) + 1
            )
            if run.status in (RunStatus.SUBMITTED, RunStatus.PENDING):
                waiting.setdefault(run.project, []).append(run.submitted_at)
        for (project, status), n in sorted(counts.items()):
            runs.add_metric([project, status], n)
        for project, times in sorted(waiting.items()):
            depth.add_metric([project], len(times))
            age.add_metric([project], now - min(times))
        yield runs
        yield depth
        yield age
        yield from self._health(now)

    def _health(self, now: float) -> Iterable[GaugeMetricFamily]:
        fresh = GaugeMetricFamily(
            "berth_inventory_age_seconds",
            "Seconds since the GPU inventory was last published.",
            labels=["cluster"],
        )
        for cluster, at in self.store.inventory_published().items():
            fresh.add_metric([cluster], now - at)
        jump = GaugeMetricFamily(
            "berth_jump_host_healthy",
            "1 when the jump host answered its last check.",
            labels=["project"],
        )
        for project, state in (self.store.get_blob("jump-hosts") or {}).items():
            healthy = isinstance(state, dict) and state.get("healthy") is True
            jump.add_metric([str(project)], 1.0 if healthy else 0.0)
        yield fresh
        yield jump
