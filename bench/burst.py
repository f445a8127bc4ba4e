"""A burst of one-GPU tasks through Berth, against the raw apiserver limit.

Run by hand: ``.venv/bin/python -m bench.burst [--runs 500]``.

It starts its own local cluster (a pool of 64 nodes x 8 H100, so every run
fits at once) and the whole Berth stack as processes, then:

1. **The limit**: the official Python client creating the same pods Berth
   creates, at the best concurrency found (1, 4, 16, 32 threads).
2. **The burst**: ``--runs`` tasks POSTed at once (32 client threads). It
   records submit→202, and, from a pod watch on the apiserver (not Berth's own
   status), submit→pod created and submit→Running per run.

Prints a table and the end-to-end throughput as a fraction of the limit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from kubernetes import watch

from cli.local import cluster
from shared import kube
from tests.stack import start_stack

POOLS = """
pools:
  - name: h100
    count: 64
    cpu: "208"
    memory: 1800Gi
    gpu: {vendor: nvidia, product: NVIDIA-H100-80GB-HBM3, count: 8, memory_mib: 81559}
"""
CLIENT_THREADS = 32  # how many submissions are in flight at once


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        directory = Path(tmp)
        pools = directory / "pools.yaml"
        pools.write_text(POOLS)
        state, _ = cluster.up(directory / "cluster", pools_file=pools, timeout_s=300)
        try:
            k = kube.connect(kubeconfig=Path(state.kubeconfig))
            limit = measure_limit(k, args.runs)
            k.call(k.core.create_namespace, {"metadata": {"name": "berth"}})
            stack = start_stack(state, directory / "stack", namespace="berth", workers=1)
            try:
                burst = measure_burst(k, stack.url, stack.admin_token, args.runs)
            finally:
                stack.stop()
            report(args.runs, limit, burst)
        finally:
            cluster.down(directory / "cluster")


def measure_limit(k: kube.Kube, n: int) -> dict[int, float]:
    """Pods per second the apiserver accepts from the Python client, per concurrency."""
    rates: dict[int, float] = {}
    for threads in (1, 4, 16, 32):
        ns = f"limit-{threads}"
        k.call(k.core.create_namespace, {"metadata": {"name": ns}})
        _wait_default_sa(k, ns)
        bodies = [_pod(f"p{i}") for i in range(n)]
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(partial(k.call, k.core.create_namespaced_pod, ns), bodies))
        rates[threads] = n / (time.perf_counter() - start)
        k.call(k.core.delete_namespace, ns)
    return rates


def measure_burst(k: kube.Kube, url: str, token: str, n: int) -> dict[str, Any]:
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    running: dict[str, float] = {}
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(k, created, bound, running, done, n), daemon=True
    )
    watcher.start()
    submitted: dict[str, float] = {}
    accepted: list[float] = []
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def submit(i: int) -> None:
        name = f"burst-{i}"
        body = {
            "configuration": {
                "type": "task",
                "name": name,
                "commands": ["train"],
                "resources": {"gpu": "H100:1", "cpu": "1..", "memory": "1GB.."},
            }
        }
        t0 = time.perf_counter()
        submitted[name] = time.time()
        r = http.post("/api/projects/main/runs", json=body)
        accepted.append(time.perf_counter() - t0)
        if r.status_code != 202:
            raise RuntimeError(f"{name}: {r.status_code} {r.text}")

    start = time.time()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(submit, range(n)))
    submit_s = time.time() - start
    done.wait(timeout=600)
    end = max(running.values(), default=time.time())
    http.close()
    to_created = [created[r] - submitted[r] for r in created if r in submitted]
    to_running = [running[r] - submitted[r] for r in running if r in submitted]
    return {
        "created_to_bound": [bound[r] - created[r] for r in bound],
        "bound_to_running": [running[r] - bound[r] for r in running if r in bound],
        "accepted": accepted,
        "submit_s": submit_s,
        "to_created": to_created,
        "to_running": to_running,
        "created": len(created),
        "running": len(running),
        "throughput": len(running) / (end - start),
    }


def _watch(
    k: kube.Kube,
    created: dict[str, float],
    bound: dict[str, float],
    running: dict[str, float],
    done: threading.Event,
    n: int,
) -> None:
    w = watch.Watch()
    for event in w.stream(
        k.core.list_namespaced_pod,
        "berth",
        label_selector=kube.LABEL_RUN,
        timeout_seconds=600,
        _request_timeout=620,
    ):
        pod = event["object"]
        run = pod.metadata.labels[kube.LABEL_RUN]
        now = time.time()
        created.setdefault(run, now)
        if pod.spec.node_name:
            bound.setdefault(run, now)
        if pod.status.phase == "Running":
            running.setdefault(run, now)
        if len(running) >= n:
            done.set()
            w.stop()
            return


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"bench": "limit"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["/bin/sh", "-c", "set -e\ntrain"],
                    "resources": {
                        "requests": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"},
                        "limits": {"nvidia.com/gpu": "1"},
                    },
                }
            ],
        },
    }


def _wait_default_sa(k: kube.Kube, ns: str) -> None:
    from shared.errors import KubeNotFound

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            k.call(k.core.read_namespaced_service_account, "default", ns)
            return
        except KubeNotFound:
            time.sleep(0.1)


def _p(values: list[float]) -> str:
    return f"{_pct(values, 0.5):.2f} / {_pct(values, 0.99):.2f} s"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(n: int, limit: dict[int, float], burst: dict[str, Any]) -> None:
    best_threads, best = max(limit.items(), key=lambda kv: kv[1])
    acc, created, running = burst["accepted"], burst["to_created"], burst["to_running"]
    rows = [
        (f"raw apiserver pod creates, {t} threads", f"{r:.0f} pods/s")
        for t, r in sorted(limit.items())
    ]
    rows += [
        ("submit->202 p50 / p99", f"{_pct(acc, 0.5) * 1000:.1f} / {_pct(acc, 0.99) * 1000:.1f} ms"),
        (f"all {n} submitted in", f"{burst['submit_s']:.2f} s"),
        (
            "submit->pod created p50 / p99",
            f"{_pct(created, 0.5):.2f} / {_pct(created, 0.99):.2f} s",
        ),
        ("submit->Running p50 / p99", f"{_pct(running, 0.5):.2f} / {_pct(running, 0.99):.2f} s"),
        ("pod created->bound p50 / p99 (kube-scheduler)", _p(burst["created_to_bound"])),
        ("pod bound->Running p50 / p99 (KWOK)", _p(burst["bound_to_running"])),
        ("mean submit->Running", f"{statistics.mean(running or [0]):.2f} s"),
        ("pods created / running", f"{burst['created']} / {burst['running']}"),
        ("end-to-end throughput", f"{burst['throughput']:.1f} runs/s"),
        (
            f"... as a fraction of the limit ({best:.0f}/s at {best_threads} threads)",
            f"{burst['throughput'] / best:.2f}",
        ),
    ]
    print(f"\nBurst of {n} one-GPU tasks (64 nodes x 8 H100, KWOK)\n")
    print("| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    main()
