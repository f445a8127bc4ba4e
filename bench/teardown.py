"""Scenario 7: stop 1,000 runs; the time until the apiserver holds none of their objects.

Run with the harness: ``.venv/bin/python -m bench --only teardown``.

The runs are submitted through the API and left until every pod is Running
(a watch on the apiserver says so). Then every run is stopped at once, 32
``POST .../stop`` requests in flight, and the apiserver is polled (one
``limit=1`` list per kind, every 100 ms) until no pod, Secret or Service with
a ``berth.dev/run`` label is left in the namespace. The clock starts before
the first stop request is sent.
"""

from __future__ import annotations

import math

from bench.burst import berth_burst, stop_berth_runs
from bench.common import Figures
from shared import kube
from tests.stack import Stack

SCENARIO = "7 teardown"


def run(figs: Figures, k: kube.Kube, stack: Stack, *, n: int, repeats: int) -> None:
    for rep in range(repeats):
        burst = berth_burst(k, stack, n, prefix=f"td{rep}")
        names = [f"td{rep}-{i}" for i in range(n)]
        objects = _count(k, stack.namespace)
        if burst.errors:
            figs.text(SCENARIO, f"stop {n} runs", f"failed: {burst.errors[0]}")
        seconds = stop_berth_runs(k, stack, names, timeout=max(300.0, 0.5 * n))
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


def _count(k: kube.Kube, namespace: str) -> int:
    return sum(
        len(k.call(lister, namespace, label_selector=kube.LABEL_RUN).items)
        for lister in (
            k.core.list_namespaced_pod,
            k.core.list_namespaced_secret,
            k.core.list_namespaced_service,
        )
    )
