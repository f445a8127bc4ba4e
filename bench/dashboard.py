"""The dashboard at 1,000 nodes in headless Chromium (issue 18): first draw and live updates.

Run by hand: ``.venv/bin/python -m bench.dashboard`` (its own cluster from
``bench/pools-1000.yaml``: 1,000 KWOK nodes, 6,600 GPUs; a few minutes). It logs
in as a person would and measures, in the browser:

* **first draw**: navigation to the page drawn from the first state (login done);
* **render**: the script's own time to draw a state (``data-render-ms``), per update;
* **update**: a one-GPU task submitted through the API until the map shows its GPU
  in use, ``--runs`` times; this includes Berth placing the run, which the map shows
  as soon as it is decided, and the stream's 1 s refresh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ensure_namespace, machine, pct
from cli.local import cluster
from shared import kube
from tests.cdp import Browser
from tests.stack import Stack, start_stack

HERE = Path(__file__).resolve().parent
NAMESPACE = "berth"
RUNS = 10
_USED = "document.querySelectorAll('.gpu.used').length"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    p.add_argument("--runs", type=int, default=RUNS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="berth-bench-dashboard-") as tmp:
        directory = Path(tmp) / "local"
        _say("starting the local cluster (bench/pools-1000.yaml)")
        state, _ = cluster.up(directory, pools_file=HERE / "pools-1000.yaml", timeout_s=900)
        k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
        try:
            ensure_namespace(k, NAMESPACE)
            stack = start_stack(state, Path(tmp) / "stack", namespace=NAMESPACE)
            browser = Browser(Path(tmp))
            try:
                _measure(stack, browser, args.runs)
            finally:
                browser.close()
                with stack.client() as http:
                    for i in range(args.runs):
                        http.post(f"/api/projects/main/runs/dash-{i}/stop", json={"abort": True})
                stack.stop()
        finally:
            k.close()
            cluster.down(directory)


def _measure(stack: Stack, browser: Browser, runs: int) -> None:
    browser.goto(f"{stack.url}/dashboard")
    browser.wait_for("!!document.getElementById('token')")
    started = time.perf_counter()
    browser.evaluate(
        f"document.getElementById('token').value = '{stack.admin_token}';"
        " document.querySelector('form').submit(); true"
    )
    browser.wait_for("!!document.body && Number(document.body.dataset.updates) >= 1", timeout=120)
    first = time.perf_counter() - started
    tiles = browser.evaluate("document.querySelectorAll('.node').length")
    gpus = browser.evaluate("document.querySelectorAll('.gpu').length")
    renders = [float(browser.evaluate("document.body.dataset.renderMs"))]
    updates = []
    with stack.client() as http:
        for i in range(runs):
            before = int(browser.evaluate(_USED))
            t0 = time.perf_counter()
            conf = {
                "type": "task",
                "name": f"dash-{i}",
                "commands": ["train"],
                "resources": {"gpu": "A10:1"},
            }
            answer = http.post("/api/projects/main/runs", json={"configuration": conf})
            answer.raise_for_status()
            browser.wait_for(f"{_USED} > {before}", timeout=60)
            updates.append(time.perf_counter() - t0)
            renders.append(float(browser.evaluate("document.body.dataset.renderMs")))
    print(f"machine: {machine()}")
    print(f"page: {tiles} node tiles, {gpus} GPUs")
    print(f"login -> first state drawn: {first * 1000:.0f} ms")
    print(
        f"render of one state (script time): p50 {statistics.median(renders):.0f} ms,"
        f" max {max(renders):.0f} ms over {len(renders)} draws"
    )
    print(
        f"task submitted -> its GPU shown in use: p50 {statistics.median(updates) * 1000:.0f} ms,"
        f" p99 {pct(updates, 99) * 1000:.0f} ms over {len(updates)} runs"
    )


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
