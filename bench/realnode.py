"""The real nodes' own figures: bring-up, image builds, pod start latency.

Run by hand, as root: ``.venv/bin/python -m bench.realnode`` (a few minutes;
``--cold`` also rebuilds the images from Debian packages in a scratch cache).
It starts its own local cluster with two real nodes and no KWOK pools in a
temporary directory and stops it at the end.

1. ``berth local up`` with real nodes: seconds to both nodes Ready with GPUs,
   with the image archives cached and the node's image store empty.
2. Image builds: every image from Debian packages with an empty cache (cold,
   only with ``--cold``) and with the archives cached (warm: a no-op check).
3. ``berth local up`` as a newcomer runs it (``make local`` without the
   install step): seconds from the command to the first line of the example's
   output, with a clean ``BERTH_HOME`` (caches warm) and again after ``berth
   local down`` (its directory kept: images already in containerd).
4. Pod create -> container running: 20 pods created at once on the real
   nodes (the run image, ``sleep``), from the create call to the pod's
   ``containerStatuses[0].state.running.startedAt`` as the kubelet reports
   it (second resolution, so measured here by a watch instead: the moment the
   watch sees the pod Running).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import watch

from bench.common import machine, pct
from cli.local import cluster, images
from cli.local.realnode.node import images_cache_dir
from shared import kube
from shared.errors import KubeNotFound

BERTH = str(Path(sys.executable).with_name("berth"))

PODS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold image build")
    parser.add_argument("--pods", type=int, default=PODS)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if args.cold:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.monotonic()
            bin_dir = cluster.build()
            images.build_all(Path(scratch), bin_dir / "pause", progress=_say)
            rows.append(("image build, cold (4 Debian images + pause)", _s(started)))
    bin_dir = cluster.build()
    started = time.monotonic()
    images.build_all(images_cache_dir(), bin_dir / "pause")
    rows.append(("image build, warm (archives cached)", _s(started)))
    with tempfile.TemporaryDirectory(prefix="berth-bench-real-") as tmp:
        directory = Path(tmp)
        pools = directory / "pools.yaml"
        pools.write_text("pools: []\n")
        started = time.monotonic()
        state, _ = cluster.up(directory, pools_file=pools, real_nodes=2, progress=_say)
        try:
            rows.append(("local up to 2 real nodes Ready (empty image store)", _s(started)))
            assert state.real_nodes is not None
            latencies = _pod_starts(state, args.pods)
            rows.append(
                (
                    f"pod create -> Running, {args.pods} at once: p50 / p99",
                    f"{statistics.median(latencies):.2f} s / {pct(latencies, 99):.2f} s",
                )
            )
            started = time.monotonic()
        finally:
            cluster.down(directory, remove_images=True)
        rows.append(("local down (drain, stop, restore the host)", _s(started)))
    rows += _local_up_rows()
    print(f"machine: {machine()}")
    width = max(len(r[0]) for r in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")


def _local_up_rows() -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-home-") as home:
        env = {**os.environ, "BERTH_HOME": home}
        try:
            for label in ("clean ~/.berth", "after down, directory kept"):
                seconds = _first_output_s(env)
                rows.append(
                    (f"berth local up -> example's first line ({label})", f"{seconds:.1f} s")
                )
                subprocess.run([BERTH, "local", "down"], env=env, capture_output=True, timeout=300)
        finally:
            subprocess.run([BERTH, "local", "down"], env=env, capture_output=True, timeout=300)
    return rows


def _first_output_s(env: dict[str, str]) -> float:
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [BERTH, "local", "up"], env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert proc.stdout is not None
        first: float | None = None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if first is None and line.startswith("hello from"):
                first = time.monotonic() - started
        if proc.wait(timeout=600) != 0 or first is None:
            errors.seek(0)
            tail = "".join(lines[-20:]) + errors.read()[-3000:]
            raise SystemExit(f"berth local up failed or printed no example output:\n{tail}")
    return first


def _pod_starts(state: cluster.ClusterState, count: int) -> list[float]:
    assert state.real_nodes is not None
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
    namespace = "bench-real"
    k.call(k.core.create_namespace, {"metadata": {"name": namespace}})
    _wait_default_sa(k, namespace)
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    done = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(k.core.list_namespaced_pod, namespace, timeout_seconds=300):
            pod = event["object"]
            if pod.status.phase == "Running" and pod.metadata.name not in running:
                running[pod.metadata.name] = time.monotonic()
                if len(running) == count:
                    break
        done.set()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    time.sleep(0.5)  # the watch is established before the first create
    image = state.real_nodes.images["run"]
    for i in range(count):
        name = f"p{i}"
        created[name] = time.monotonic()
        k.call(k.core.create_namespaced_pod, namespace, _pod(name, image))
    if not done.wait(300):
        raise SystemExit(f"only {len(running)} of {count} pods ran within 300 s")
    k.close()
    return [running[n] - created[n] for n in created]


def _pod(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": ["sleep", "600"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        },
    }


def _wait_default_sa(k: kube.Kube, namespace: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            k.call(k.core.read_namespaced_service_account, "default", namespace)
            return
        except KubeNotFound:  # the controller makes it moments after the namespace
            time.sleep(0.2)


def _s(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


def _say(message: str) -> None:
    print(message, file=sys.stderr)


if __name__ == "__main__":
    main()
