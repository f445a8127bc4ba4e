"""Scenario 9: exec-credential kubeconfigs beside a static token (issue 21).

Run alone: ``.venv/bin/python -m bench.credentials --runs 60`` (starts its own
cluster from ``bench/pools-burst.yaml``), or with the harness:
``.venv/bin/python -m bench --only credentials``.

Berth's whole stack is started three times against one cluster, each time with
another kubeconfig for its processes:

* **static token**: the cluster admin's token, written in the kubeconfig;
* **exec plugin**: a plugin script (tests/credential_plugins.py) that logs each
  call with the pid that ran it and prints the same token with an
  ``expirationTimestamp`` ``LIFETIME_S`` seconds ahead, as ``aws eks get-token``
  prints a 15 minute one;
* **slow exec plugin**: the same, sleeping ``SLOW_PLUGIN_S`` per call, as real
  plugins spend a good fraction of a second.

Each time: a burst of ``n`` one-GPU tasks through the API (bench/burst.py's, timed
on the apiserver), then ``IDLE_S`` seconds with the ``n`` runs active and nothing
submitted, then every run is stopped. Plugin calls are counted from the plugin's
log: during the burst (per run), and in the idle window per Berth process, against
the target of at most one call per credential lifetime per process.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench.burst import berth_burst, stop_berth_runs
from bench.common import Figures, ensure_namespace, table
from cli.local import cluster
from shared import kube
from tests.credential_plugins import exec_kubeconfig, plugin_calls, write_plugin
from tests.stack import start_stack

SCENARIO = "9 credentials"
LIFETIME_S = 30.0
"""The issue's credential lifetime: short, so a minute holds two lifetimes."""
IDLE_S = 60.0
"""The idle window: "plugin calls per idle minute"."""
SLOW_PLUGIN_S = 0.5
RUNS = 60
NAMESPACE = "berth"
HERE = Path(__file__).resolve().parent


def run(
    figs: Figures,
    state: cluster.ClusterState,
    directory: Path,
    *,
    n: int = RUNS,
    idle_s: float = IDLE_S,
    lifetime_s: float = LIFETIME_S,
    repeats: int = 1,
) -> None:
    """The three kubeconfigs, one after the other, on the running cluster ``state``.

    Each repeat starts with the next kubeconfig, so a load that drifts (the first
    stack on a fresh cluster is slower) does not always favour the same one.
    """
    variants = [("static token", None), ("exec plugin", 0.0), ("slow exec plugin", SLOW_PLUGIN_S)]
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
    try:
        ensure_namespace(k, NAMESPACE)
        for rep, i in ((r, (r + j) % len(variants)) for r in range(repeats) for j in range(3)):
            label, sleep_s = variants[i]
            where = directory / f"credentials-{rep}-{i}"
            where.mkdir(parents=True)
            log = where / "plugin.log"
            kubeconfig = Path(state.kubeconfig)
            if sleep_s is not None:
                kubeconfig = _plugin_kubeconfig(where, state, log, sleep_s, lifetime_s)
            _say(f"{label}: starting Berth, then a burst of {n} runs")
            _one(
                figs,
                k,
                state,
                where,
                kubeconfig,
                log,
                label=label,
                prefix=f"cr{rep}{i}",
                n=n,
                idle_s=idle_s,
                lifetime_s=lifetime_s,
                plugin=sleep_s is not None,
            )
    finally:
        k.close()


def _one(
    figs: Figures,
    k: kube.Kube,
    state: cluster.ClusterState,
    where: Path,
    kubeconfig: Path,
    log: Path,
    *,
    label: str,
    prefix: str,
    n: int,
    idle_s: float,
    lifetime_s: float,
    plugin: bool,
) -> None:
    stack = start_stack(state, where / "stack", namespace=NAMESPACE, kubeconfig=kubeconfig)
    names = [f"{prefix}-{i}" for i in range(n)]
    try:
        before = len(plugin_calls(log))
        result = berth_burst(k, stack, n, prefix=prefix)
        during = len(plugin_calls(log)) - before
        figs.add(SCENARIO, f"{label}: runs Running per second", result.running_per_s, "/s")
        figs.add(
            SCENARIO,
            f"{label}: runs Running",
            len(result.to_running),
            "",
            note="; ".join(result.errors[:2]),
        )
        if plugin:
            figs.add(SCENARIO, f"{label}: plugin calls per run (burst)", during / n, "")
        _say(f"{label}: {len(result.to_running)} of {n} Running; idle for {idle_s:.0f} s")
        start = time.time()
        threading.Event().wait(idle_s)  # the measurement window itself
        idle = [c for c in plugin_calls(log) if c.at >= start]
        if plugin:
            per_process = collections.Counter(c.parent_pid for c in idle)
            lifetimes = idle_s / lifetime_s
            figs.add(
                SCENARIO,
                f"{label}: plugin calls per idle minute, {n} runs active",
                len(idle) * 60.0 / idle_s,
                "/min",
                note=f"{len(per_process)} Berth processes called it",
            )
            figs.add(
                SCENARIO,
                f"{label}: plugin calls per credential lifetime per process (idle)",
                max(per_process.values(), default=0) / lifetimes,
                "",
                note=f"the busiest process; lifetime {lifetime_s:g} s, target <= 1",
            )
            figs.add(SCENARIO, f"{label}: plugin calls in all", len(plugin_calls(log)), "")
    finally:
        stop_berth_runs(k, stack, names, timeout=max(120.0, n * 0.5))
        stack.stop()


def _plugin_kubeconfig(
    where: Path, state: cluster.ClusterState, log: Path, sleep_s: float, lifetime_s: float
) -> Path:
    plugin = write_plugin(
        where / "get-token",
        log=log,
        tokens=[state.admin_token],
        lifetime_s=lifetime_s,
        sleep_s=sleep_s,
    )
    doc = exec_kubeconfig(server=state.apiserver_url, ca_file=state.ca_file, command=str(plugin))
    path = where / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.credentials", description=__doc__)
    p.add_argument("--runs", type=int, default=RUNS)
    p.add_argument("--idle", type=float, default=IDLE_S, help="idle window, seconds")
    p.add_argument("--lifetime", type=float, default=LIFETIME_S, help="credential lifetime, s")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    figs = Figures()
    with tempfile.TemporaryDirectory(prefix="berth-bench-credentials-") as tmp:
        directory = Path(tmp) / "local"
        _say("starting the local cluster (bench/pools-burst.yaml)")
        state, _ = cluster.up(directory, pools_file=HERE / "pools-burst.yaml", timeout_s=600)
        try:
            run(
                figs,
                state,
                Path(tmp),
                n=args.runs,
                idle_s=args.idle,
                lifetime_s=args.lifetime,
                repeats=args.repeats,
            )
        finally:
            cluster.down(directory)
    print(table(figs))


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
