"""Scenarios 1 and 2: the raw apiserver pod-create limit, and a burst through Berth.

Run with the harness: ``.venv/bin/python -m bench --only limit,burst`` (this
module's ``main`` does exactly that).

1. **The limit**: the official Python client creating the pods Berth itself
   would create (built by :func:`workers.podspec.build_job_objects`, so the same
   size, labels and node affinity), at several client concurrencies; the best
   is the ceiling every other throughput is quoted against. Berth also creates
   one Secret per job (SSH keys), so the pod+Secret rate is measured as well.
2. **The burst**: ``n`` one-GPU tasks POSTed to the API at once (32 client
   threads). A pod watch on the apiserver, not Berth's own status, gives
   submit→pod created and submit→Running per run.

Between repeats every run is stopped; the time until the apiserver holds none
of their objects is reported too (scenario 7 measures it at 1,000 runs).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import httpx

from bench.common import Figures, PodTimes, any_objects, ensure_namespace, pct, poll
from shared import kube
from shared.configuration.parse import parse_run_configuration
from shared.kube.raw import labels_of
from shared.settings import load_settings
from shared.ssh import new_host_key, public_key_text
from shared.state.jobs import jobs_for
from shared.state.records import Placement, Run
from tests.stack import Stack
from workers import ssh_secret
from workers.podspec import PodContext, build_job_objects

CLIENT_THREADS = 32  # submissions in flight at once, for Berth and dstack alike
LIMIT_THREADS = (1, 4, 16, 32)
GPU_REQUEST = {"gpu": "H100:1", "cpu": "1..", "memory": "1GB.."}
TASK = {"type": "task", "commands": ["train"], "resources": GPU_REQUEST}
GPU_NODES = "kwok-h100-"  # the burst pool's node names: bench/pools-burst.yaml
GPU_NODE_COUNT = 128
# A burst whose pods stop starting (a run the tool never places) is cut after this
# long without a new Running pod, instead of waiting out the whole deadline.
STALL_S = 120.0

T = TypeVar("T")


@dataclass
class BurstResult:
    """One burst as seen from the client and from a watch on the apiserver."""

    n: int
    accepted: list[float] = field(default_factory=list)
    """Per run: request sent → response received, seconds."""
    to_created: list[float] = field(default_factory=list)
    to_running: list[float] = field(default_factory=list)
    submit_s: float = 0.0
    """First request sent → last response received."""
    span_created: float = 0.0
    """First request sent → last pod seen created."""
    span_running: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def created_per_s(self) -> float:
        return len(self.to_created) / self.span_created if self.span_created else 0.0

    @property
    def running_per_s(self) -> float:
        return len(self.to_running) / self.span_running if self.span_running else 0.0


# --- 1. the limit ------------------------------------------------------------------------


def measure_limit(
    k: kube.Kube,
    n: int,
    *,
    with_secret: bool = False,
    threads: tuple[int, ...] = LIMIT_THREADS,
) -> dict[int, float]:
    """Objects per second the apiserver accepts from the Python client, per concurrency.

    Each concurrency gets a fresh namespace with ``n`` of Berth's pods (and,
    ``with_secret``, a Secret of an SSH Secret's size beside each, as Berth made per job
    until the eleventh session), deleted and waited for before the next.
    """
    rates: dict[int, float] = {}
    for count in threads:
        ns = f"bench-limit-{secrets.token_hex(3)}"
        ensure_namespace(k, ns)
        bodies = [berth_objects(f"limit-{i}", _node(i)) for i in range(n)]

        def create(objects: tuple[dict[str, Any], dict[str, Any] | None], ns: str = ns) -> None:
            pod, secret = objects
            if with_secret:
                k.call(k.core.create_namespaced_secret, ns, secret or per_job_secret(pod))
            k.call(k.core.create_namespaced_pod, ns, pod)

        start = time.monotonic()
        concurrently(create, bodies, count)
        rates[count] = n / (time.monotonic() - start)
        delete_namespace(k, ns)
    return rates


def berth_objects(name: str, node: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Pod and the job's own Secret (None for this task: it names no project secret
    and no registry) Berth's provisioning creates for a one-GPU task on ``node``."""
    conf = parse_run_configuration(json.dumps({"name": name, **TASK}))  # JSON is YAML
    run = Run(
        id=secrets.token_hex(16),
        project="main",
        name=name,
        user="bench",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
    )
    job = jobs_for(run, conf)[0]
    job.placement = Placement(
        node=node, gpu_resource="nvidia.com/gpu", gpus=1, cpu_milli=1000, memory_bytes=2**30
    )
    objects = build_job_objects(
        run,
        job,
        conf,
        PodContext(
            default_image=load_settings().default_image,
            ssh_public_keys=(public_key_text(_host_key()),),
        ),
    )
    return objects.pod, objects.secret


def per_job_secret(pod: dict[str, Any]) -> dict[str, Any]:
    """A Secret like the SSH Secret, named and labelled like ``pod``: what Berth made
    beside each pod until the eleventh session, for the pairs row."""
    body = ssh_secret.secret("main", (public_key_text(_host_key()),), host_key=_host_key())
    body["metadata"] = {"name": pod["metadata"]["name"], "labels": pod["metadata"]["labels"]}
    body.pop("immutable")
    return body


@cache
def _host_key() -> str:
    """One key for every limit pod: generating hundreds of keys is not what is measured."""
    return new_host_key()


def _node(i: int) -> str:
    return f"{GPU_NODES}{i % GPU_NODE_COUNT}"


def delete_namespace(k: kube.Kube, ns: str, timeout: float = 120) -> None:
    """Delete a namespace and wait until it is gone, so its teardown does not load the next
    measurement."""
    k.call(k.core.delete_collection_namespaced_pod, ns, grace_period_seconds=0)
    k.call(k.core.delete_namespace, ns)

    def gone() -> bool:
        return not any(n.metadata.name == ns for n in k.call(k.core.list_namespace).items)

    poll(gone, timeout=timeout, interval=0.5)


# --- 2. the burst ------------------------------------------------------------------------


def berth_burst(k: kube.Kube, stack: Stack, n: int, prefix: str) -> BurstResult:
    """Submit ``n`` tasks named ``<prefix>-<i>`` at once; time them on the apiserver."""
    pods = PodTimes(k, stack.namespace, lambda pod: labels_of(pod).get(kube.LABEL_RUN))
    pods.start()
    names = [f"{prefix}-{i}" for i in range(n)]
    with stack.client() as http:

        def submit(name: str) -> tuple[float, float, str]:
            t0 = time.monotonic()
            try:
                r = http.post(
                    "/api/projects/main/runs", json={"configuration": {"name": name, **TASK}}
                )
            except httpx.HTTPError as e:
                return t0, time.monotonic(), f"{name}: {e!r}"
            error = "" if r.status_code == 202 else f"{name}: {r.status_code} {r.text[:200]}"
            return t0, time.monotonic(), error

        return collect(
            pods,
            names,
            lambda: concurrently(submit, names, CLIENT_THREADS),
            deadline_s=max(120.0, 1.5 * n),
        )


def collect(
    pods: PodTimes,
    names: list[str],
    submit_all: Callable[[], list[tuple[float, float, str]]],
    *,
    deadline_s: float,
) -> BurstResult:
    """Run the submissions, wait for every pod to run, and turn the times into a result."""
    result = BurstResult(n=len(names))
    start = time.monotonic()
    try:
        answers = submit_all()
        result.submit_s = time.monotonic() - start
        sent = {name: t0 for name, (t0, _, _) in zip(names, answers, strict=True)}
        result.accepted = [t1 - t0 for t0, t1, err in answers if not err]
        result.errors = [err for _, _, err in answers if err]
        ok = {name for name, (_, _, err) in zip(names, answers, strict=True) if not err}
        if not pods.wait_running(ok, timeout=deadline_s, stall_s=STALL_S):
            missing = len(ok - pods.running.keys())
            result.errors.append(
                f"{missing} of {len(ok)} pods not Running in time"
                f" (deadline {deadline_s:.0f} s, or no new one for {STALL_S:.0f} s)"
            )
    finally:
        pods.stop()
    created = {r: t for r, t in pods.created.items() if r in sent}
    running = {r: t for r, t in pods.running.items() if r in sent}
    result.to_created = [t - sent[r] for r, t in created.items()]
    result.to_running = [t - sent[r] for r, t in running.items()]
    result.span_created = max(created.values(), default=start) - start
    result.span_running = max(running.values(), default=start) - start
    return result


def stop_berth_runs(k: kube.Kube, stack: Stack, names: list[str], *, timeout: float) -> float:
    """Stop every run at once through the API; seconds until none of their objects remain.

    NaN when objects remain after ``timeout``.
    """
    with stack.client() as http:
        start = time.monotonic()

        def stop(name: str) -> None:
            http.post(f"/api/projects/main/runs/{name}/stop", json={"abort": False})

        concurrently(stop, names, CLIENT_THREADS)
        done = poll(
            lambda: not any_objects(k, stack.namespace, kube.LABEL_RUN),
            timeout=timeout,
            interval=0.1,
        )
        return time.monotonic() - start if done else float("nan")


def concurrently(fn: Callable[[Any], T], items: Iterable[Any], threads: int) -> list[T]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def summary(result: BurstResult) -> dict[str, float]:
    """The per-repeat figures of one burst, in seconds and runs per second."""
    return {
        "submit->202 p50": pct(result.accepted, 50),
        "submit->202 p99": pct(result.accepted, 99),
        "submit->pod created p50": pct(result.to_created, 50),
        "submit->pod created p99": pct(result.to_created, 99),
        "submit->Running p50": pct(result.to_running, 50),
        "submit->Running p99": pct(result.to_running, 99),
        "all submitted in": result.submit_s,
        "pods created per second": result.created_per_s,
        "runs Running per second (end to end)": result.running_per_s,
    }


# --- the report --------------------------------------------------------------------------


def add_figures(
    figs: Figures, scenario: str, result: BurstResult, limit: float, *, accepted: str
) -> None:
    """One repeat's burst figures; ``accepted`` names the submit answer (202, or 200)."""
    for what, value in summary(result).items():
        unit = "/s" if "per second" in what else "s"
        figs.add(scenario, what.replace("submit->202", accepted), value, unit)
    figs.add(scenario, "runs whose pod was created", len(result.to_created), f"of {result.n}")
    figs.add(
        scenario,
        "end-to-end throughput as a fraction of the limit",
        result.running_per_s / limit,
        "x",
        note="runs Running per second / best raw pod creates per second, same repeat",
    )


STAGE_REMEDIES = {
    "the API (submit -> 202)": (
        "Submission validates the configuration, reads its namespace's Pod Security label, "
        "LimitRanges and ResourceQuotas from the apiserver, writes the run and its jobs to "
        "Redis and sends one Celery message, all inside the request. Under a burst the three "
        "reads are most of it (545 of 650 ms at p50, 300 runs, 2026-12-05): the apiserver is "
        "busy creating the burst's pods. A watched cache of those objects would remove them."
    ),
    "Berth's queue, scheduling pass and provisioning (202 -> pod created)": (
        "A pass admits everything that fits, writes the admissions in one script run and "
        "sends their jobs in messages of up to 32; a worker provisions each message's jobs "
        "8 at a time (the job's Pod; the project's SSH Secret once). Passes run one at a "
        "time under a Redis lock. More worker processes shorten it, on cores the cluster "
        "does not need."
    ),
    "the node (pod created -> Running)": (
        "Outside Berth: Berth binds each pod to the node it chose (spec.nodeName), so no "
        "kube-scheduler stands between; what is left is KWOK's own Pending -> Running "
        "status write for each pod, queued behind the burst's other writes on the "
        "apiserver."
    ),
}


def slowest_stage(figs: Figures, scenario: str) -> list[str]:
    """The median run's time per stage of Berth's path, and what would shorten the largest."""

    def median(what: str) -> float:
        fig = figs.get(scenario, what)
        return fig.median if fig is not None and fig.samples else math.nan

    accepted = median("submit->202 p50")
    created = median("submit->pod created p50")
    running = median("submit->Running p50")
    if any(math.isnan(v) for v in (accepted, created, running)):
        return ["Scenario 2 did not run, so there is no stage breakdown."]
    stages = dict(
        zip(STAGE_REMEDIES, (accepted, created - accepted, running - created), strict=True)
    )
    slowest = max(stages, key=lambda stage: stages[stage])
    lines = ["The median run of the burst (p50s of scenario 2), stage by stage:", ""]
    lines += [f"- {stage}: {seconds:.2f} s" for stage, seconds in stages.items()]
    lines += ["", f"The slowest stage is **{slowest}**. {STAGE_REMEDIES[slowest]}"]
    return lines
