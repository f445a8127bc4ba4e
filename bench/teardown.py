"""Scenario 7: stop 1,000 runs; the time until the apiserver holds none of their objects.

Run with the harness: ``.venv/bin/python -m bench --only teardown``.

The runs are submitted through the API and left until every pod is Running
(a watch on the apiserver says so). Then every run is stopped at once, 32
``POST .../stop`` requests in flight, and the apiserver is polled (one
``limit=1`` list per kind, every 100 ms) until no pod, Secret or Service with
a ``berth.dev/run`` label is left in the namespace. The clock starts before
the first stop request is sent. The CPU each process spent meanwhile is read
from ``/proc``.

Beside it, the raw delete limit: the same pods (and Secrets, if Berth makes a
job Secret of its own for these runs: since the eleventh session it does not) created straight
on the apiserver, left until Running, then deleted by name from
:data:`RAW_THREADS` client threads, with the same grace period as a stop;
timed to the same "none left". What Berth adds to a delete is the difference.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from bench.burst import berth_burst, berth_objects, concurrently, delete_namespace, stop_berth_runs
from bench.common import Figures, any_objects, cpu_seconds, ensure_namespace, poll
from shared import kube
from tests.stack import Stack

SCENARIO = "7 teardown"
RAW_THREADS = 32
GPU_NODE = "kwok-h100-"
GPU_NODES = 128  # bench/pools-burst.yaml


def run(
    figs: Figures,
    k: kube.Kube,
    stack: Stack,
    *,
    n: int,
    repeats: int,
    cluster_pids: dict[str, int] | None = None,
) -> None:
    for rep in range(repeats):
        burst = berth_burst(k, stack, n, prefix=f"td{rep}")
        names = [f"td{rep}-{i}" for i in range(n)]
        objects = _count(k, stack.namespace)
        if burst.errors:
            figs.text(SCENARIO, f"stop {n} runs", f"failed: {burst.errors[0]}")
        pids = {f"berth {r.name}": r.pid for r in stack.processes}
        pids.update({owner(name): pid for name, pid in (cluster_pids or {}).items()})
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        seconds = stop_berth_runs(k, stack, names, timeout=max(300.0, 0.5 * n))
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        what = f"stop {n} runs -> apiserver holds none of their objects"
        if math.isnan(seconds):  # objects were left
            figs.text(SCENARIO, what, "objects left after the timeout")
            continue
        figs.add(
            SCENARIO,
            what,
            seconds,
            "s",
            note=f"{objects} objects (pods, secrets, services); {len(burst.to_running)} Running",
        )
        figs.add(SCENARIO, "objects deleted per second", objects / seconds, "/s")
        _cpu_rows(figs, used, n)
        raw = raw_delete_limit(k, n)
        own = berth_objects("raw-0", f"{GPU_NODE}0")[1] is not None
        figs.add(
            SCENARIO,
            f"raw: delete {n} Running pods{f' + {n} Secrets' if own else ''} straight on the"
            " apiserver",
            raw,
            "s",
            note=f"{RAW_THREADS} client threads, by name, default grace; none left",
        )
        figs.add(SCENARIO, "ratio: Berth's stop / the raw deletes", seconds / raw, "x")


def owner(process: str) -> str:
    """A local cluster process's name with whose it is: Redis is Berth's store."""
    return f"berth {process}" if process == "redis" else f"cluster {process}"


def raw_delete_limit(k: kube.Kube, n: int) -> float:
    """Seconds to delete ``n`` Running pods (and their own Secrets, if Berth makes them)
    by name, until none is left."""
    ns = f"bench-delete-{secrets.token_hex(3)}"
    ensure_namespace(k, ns)
    try:
        bodies = [berth_objects(f"raw-{i}", f"{GPU_NODE}{i % GPU_NODES}") for i in range(n)]

        def create(objects: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
            pod, secret = objects
            if secret is not None:
                k.call(k.core.create_namespaced_secret, ns, secret)
            k.call(k.core.create_namespaced_pod, ns, pod)

        concurrently(create, bodies, RAW_THREADS)
        poll(lambda: _running(k, ns) >= n, timeout=max(120.0, 0.5 * n), interval=0.5)

        def delete(objects: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
            pod, secret = objects
            k.call(k.core.delete_namespaced_pod, pod["metadata"]["name"], ns)
            if secret is not None:
                k.call(k.core.delete_namespaced_secret, secret["metadata"]["name"], ns)

        start = time.monotonic()
        concurrently(delete, bodies, RAW_THREADS)
        done = poll(
            lambda: not any_objects(k, ns, kube.LABEL_RUN), timeout=max(120.0, n), interval=0.1
        )
        return time.monotonic() - start if done else float("nan")
    finally:
        delete_namespace(k, ns)


def _running(k: kube.Kube, ns: str) -> int:
    body = k.call_json(k.core.list_namespaced_pod, ns, field_selector="status.phase=Running")
    return len(body.get("items") or [])


def _cpu_rows(figs: Figures, used: dict[str, float], n: int) -> None:
    for name, seconds in sorted(used.items()):
        if seconds > 0.05:
            figs.add(SCENARIO, f"CPU per stopped run: {name}", seconds / n * 1000, "ms")
    berth = sum(s for name, s in used.items() if name.startswith("berth "))
    plane = sum(s for name, s in used.items() if name.startswith("cluster "))
    figs.add(SCENARIO, "CPU per stopped run: all of Berth's processes", berth / n * 1000, "ms")
    figs.add(SCENARIO, "CPU per stopped run: the cluster", plane / n * 1000, "ms")


def _count(k: kube.Kube, namespace: str) -> int:
    return sum(
        len(k.call(lister, namespace, label_selector=kube.LABEL_RUN).items)
        for lister in (
            k.core.list_namespaced_pod,
            k.core.list_namespaced_secret,
            k.core.list_namespaced_service,
        )
    )
