"""``python -m bench``: every scenario side by side, in one invocation, on one machine.

``make bench`` runs the full sizes; ``--quick`` runs small ones (a few minutes)
to check the harness; ``--only burst,dstack`` (names or numbers 1-7, 9, 11, 12) picks
scenarios. Each scenario is repeated (``--repeats``), and every figure is
printed as the median of the repeats with their spread, then written to
``bench/RESULTS.md`` with the machine and the command.

Clusters are the bench's own, in a temporary directory, stopped at the end:
one (``bench/pools-burst.yaml``) for the limit, the bursts, dstack, the queue
and teardown; one (``bench/pools-1000.yaml``) for the inventory. Berth runs as
separate processes (``tests/stack.py``), and each process's peak RSS (VmHWM)
is read before it is stopped.

A scenario that fails is reported as failed, with its error, and the others
still run: one broken scenario must not cost an hour of figures.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import burst, credentials, placement, projection, targets, teardown
from bench import dstack as dstack_bench
from bench import kueue as peers_bench
from bench.common import (
    Figures,
    add_rows,
    children_of,
    ensure_namespace,
    environ,
    machine,
    peak_rss_mib,
    poll,
    results_markdown,
)
from bench.cpu import BurstCpu
from cli.local import cluster
from cli.local.processes import ProcessRecord, is_running, log_tail, start_process
from shared import kube
from tests.stack import BERTH, Stack, start_stack

HERE = Path(__file__).resolve().parent
SCENARIOS = {
    "limit": "1 limit",
    "burst": "2 burst",
    "dstack": "3 dstack",
    "queue": "4 queue churn",
    "inventory": "5 inventory",
    "placement": "6 placement",
    "teardown": "7 teardown",
    "credentials": credentials.SCENARIO,
    "peers": "11 peers",  # Berth against Kueue (bench/kueue, issue 17)
    "projection": projection.SCENARIO,  # per-unit costs and 10,000 nodes (issue 17)
}
# Scenarios that write only their own section of RESULTS.md when run alone.
SECTIONED = {"peers", "projection"}
RSS = "8 peak RSS"
LOGS = Path.home() / ".cache" / "berth" / "bench-logs"


@dataclass(frozen=True)
class Sizes:
    repeats: int
    burst_runs: int
    teardown_runs: int
    inventory_pools: Path
    inventory_pods: int
    queue_runs: int | None
    """None: bench/queue.py's own size (10,000)."""
    placement_nodes: tuple[int, ...]
    credential_runs: int
    """Runs active while bench/credentials.py counts plugin calls, per kubeconfig."""
    workers: int = 1
    """Celery worker processes (8 threads each) in the burst and teardown stack."""
    peers_jobs: int = 10_000
    """One-GPU jobs each of Berth and Kueue drains in scenario 11 (bench/kueue)."""
    projection: projection.Sizes = projection.FULL
    """Queue depths, fleet sizes and the KWOK run of scenario 12 (bench/projection.py)."""


FULL = Sizes(
    repeats=3,
    burst_runs=500,
    teardown_runs=1_000,
    inventory_pools=HERE / "pools-1000.yaml",
    inventory_pods=10_000,
    queue_runs=None,
    placement_nodes=placement.NODE_COUNTS,
    credential_runs=100,
)
QUICK = Sizes(
    repeats=2,
    burst_runs=40,
    teardown_runs=60,
    inventory_pools=HERE / "pools-100.yaml",
    inventory_pods=1_000,
    queue_runs=500,
    placement_nodes=placement.NODE_COUNTS,
    credential_runs=30,
    peers_jobs=300,
    projection=projection.QUICK,
)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    sizes = _sizes(args)
    chosen = _chosen(args.only, args.skip)
    figs = Figures()
    notes: list[tuple[str, str]] = []
    started = time.time()
    facts = machine()
    command = ".venv/bin/python -m bench" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )
    peers: list[str] = []
    projected: list[str] = []
    _say(f"scenarios: {', '.join(s for s in SCENARIOS if s in chosen)}; {_describe(sizes)}")
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        if "placement" in chosen:
            with _guarded(figs, SCENARIOS["placement"]):
                placement.run(figs, repeats=sizes.repeats, node_counts=sizes.placement_nodes)
        if chosen & {"limit", "burst", "dstack", "teardown", "queue", "credentials"}:
            with _guarded(figs, "cluster for scenarios 1-4, 7, 9"):
                _main_cluster(Path(tmp), sizes, chosen, figs, notes)
        if "inventory" in chosen:
            with _guarded(figs, SCENARIOS["inventory"]):
                _inventory(Path(tmp), sizes, figs, notes)
        if "peers" in chosen:
            with _guarded(figs, SCENARIOS["peers"]):
                peers = peers_bench.run(Path(tmp), n=sizes.peers_jobs, command=command, say=_say)
        if "projection" in chosen:
            with _guarded(figs, SCENARIOS["projection"]):
                projected = projection.run(
                    Path(tmp), sizes=sizes.projection, command=command, say=_say
                )
    if chosen <= SECTIONED:  # alone: their sections only, the other scenarios' figures stay
        print("\n".join(peers + projected or [f"{f.what}: {f.text}" for f in figs]))
        if not args.no_results:
            if peers:
                peers_bench.write_section(Path(args.results), peers)
            if projected:
                projection.write_section(Path(args.results), projected)
            _say(f"wrote the {', '.join(sorted(chosen))} section(s) of {args.results}")
        return
    text = results_markdown(
        figs=figs,
        facts=facts,
        command=command,
        sizes=_describe(sizes),
        seconds=time.time() - started,
        sections=[
            ("Berth against dstack", dstack_bench.summary(figs, notes, SCENARIOS["dstack"])),
            (targets.TITLE, targets.rows(figs)),
            ("The slowest stage in Berth's path", burst.slowest_stage(figs, SCENARIOS["burst"])),
            ("Notes", [f"- {scenario}: {text}" for scenario, text in notes]),
            (peers_bench.TITLE, peers),
            (projection.TITLE, projected),
        ],
    )
    print(text)
    if not args.no_results:
        Path(args.results).write_text(text)
        _say(f"wrote {args.results}")


# --- scenarios 1-4 and 7: one cluster ------------------------------------------------------


def _main_cluster(
    tmp: Path, sizes: Sizes, chosen: set[str], figs: Figures, notes: list[tuple[str, str]]
) -> None:
    home = tmp / "home"  # BERTH_HOME for bench.queue's live part: it finds home/local
    directory = home / "local"
    _say("starting the local cluster (bench/pools-burst.yaml)")
    state, _ = cluster.up(directory, pools_file=HERE / "pools-burst.yaml", timeout_s=600)
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
    try:
        if chosen & {"limit", "burst", "dstack", "teardown"}:
            _side_by_side(tmp, state, k, sizes, chosen, figs, notes)
        if "queue" in chosen:
            with _guarded(figs, SCENARIOS["queue"]):
                _queue(home, sizes, figs, notes)
        if "credentials" in chosen:
            with _guarded(figs, SCENARIOS["credentials"]):
                _say(f"exec credentials, {sizes.credential_runs} runs per kubeconfig")
                credentials.run(figs, state, tmp, n=sizes.credential_runs, repeats=sizes.repeats)
    finally:
        k.close()
        cluster.down(directory)


def _side_by_side(
    tmp: Path,
    state: cluster.ClusterState,
    k: kube.Kube,
    sizes: Sizes,
    chosen: set[str],
    figs: Figures,
    notes: list[tuple[str, str]],
) -> None:
    ensure_namespace(k, "berth")
    _say("starting Berth (API, worker, proxy worker, beat)")
    stack = start_stack(state, tmp / "stack", namespace="berth", workers=sizes.workers)
    server: dstack_bench.DstackServer | None = None
    try:
        if "dstack" in chosen:
            server = _start_dstack(state, tmp, figs, notes)
        for rep in range(sizes.repeats):
            _say(f"repeat {rep + 1} of {sizes.repeats}")
            _one_repeat(rep, k, stack, server, sizes, chosen, figs, notes, state)
        if "teardown" in chosen:
            with _guarded(figs, SCENARIOS["teardown"]):
                _say(f"teardown of {sizes.teardown_runs} runs")
                teardown.run(
                    figs,
                    k,
                    stack,
                    n=sizes.teardown_runs,
                    repeats=sizes.repeats,
                    cluster_pids={name: r.pid for name, r in state.processes.items()},
                )
        _record_rss(figs, stack, "burst/teardown stack", notes)
        if server is not None:
            figs.add(
                SCENARIOS["dstack"],
                "dstack server peak RSS",
                peak_rss_mib(server.record.pid),
                "MiB",
                note="one process (uvicorn, SQLite)",
            )
    finally:
        stack.stop()
        if server is not None:
            server.stop()
        kept = _keep_logs([*stack.processes, *([server.record] if server else [])])
        notes.append(("logs", f"Berth's and dstack's process logs were kept in `{kept}`"))


def _start_dstack(
    state: cluster.ClusterState, tmp: Path, figs: Figures, notes: list[tuple[str, str]]
) -> dstack_bench.DstackServer | None:
    scenario = SCENARIOS["dstack"]
    _say(f"installing (if needed) and starting dstack {dstack_bench.VERSION}")
    try:
        server = dstack_bench.start_server(state, tmp / "dstack")
    except dstack_bench.DstackUnavailable as e:
        figs.text(scenario, "dstack burst", "failed: dstack unavailable (see notes)")
        notes.append((scenario, f"dstack could not be used: {e}"))
        return None
    notes.extend((scenario, note) for note in server.notes)
    notes.append((scenario, f"dstack {server.version} (server log kept with the others)"))
    return server


def _one_repeat(
    rep: int,
    k: kube.Kube,
    stack: Stack,
    server: dstack_bench.DstackServer | None,
    sizes: Sizes,
    chosen: set[str],
    figs: Figures,
    notes: list[tuple[str, str]],
    state: cluster.ClusterState,
) -> None:
    n = sizes.burst_runs
    limit = burst.measure_limit(k, n)
    best_threads, best = max(limit.items(), key=lambda kv: kv[1])
    if "limit" in chosen:
        scenario = SCENARIOS["limit"]
        for threads, rate in sorted(limit.items()):
            figs.add(scenario, f"pod creates, {threads} client threads", rate, "/s")
        figs.add(scenario, "best pod-create rate (the limit)", best, "/s")
        pairs = burst.measure_limit(k, n, with_secret=True, threads=(best_threads,))
        figs.add(
            scenario,
            "pod + Secret pairs (what Berth created per job before the eleventh session)",
            pairs[best_threads],
            "/s",
            note=f"at {best_threads} threads",
        )
    results: dict[str, burst.BurstResult] = {}
    # Alternate who goes first, so a load that drifts during a repeat hits both alike.
    order = ["berth", "dstack"] if rep % 2 == 0 else ["dstack", "berth"]
    for who in order:
        if who == "berth" and chosen & {"burst", "dstack"}:
            _say(f"Berth burst of {n}")
            cpu = BurstCpu(stack, state)
            cpu.start()
            results["berth"] = _berth_repeat(rep, k, stack, n, best, figs, notes, cpu)
            cpu.done(figs, SCENARIOS["burst"], n)
        if who == "dstack" and server is not None:
            _say(f"dstack burst of {n}")
            results["dstack"] = _dstack_repeat(rep, k, server, n, best, figs, notes)
    if "berth" in results and "dstack" in results:
        dstack_bench.add_ratios(results["berth"], results["dstack"], figs, SCENARIOS["dstack"])


def _berth_repeat(
    rep: int,
    k: kube.Kube,
    stack: Stack,
    n: int,
    limit: float,
    figs: Figures,
    notes: list[tuple[str, str]],
    cpu: BurstCpu,
) -> burst.BurstResult:
    scenario = SCENARIOS["burst"]
    result = burst.berth_burst(k, stack, n, prefix=f"b{rep}")
    cpu.running()
    burst.add_figures(figs, scenario, result, limit, accepted="submit->202")
    for error in result.errors[:3]:
        notes.append((scenario, f"repeat {rep + 1}: {error}"))
    names = [f"b{rep}-{i}" for i in range(n)]
    seconds = burst.stop_berth_runs(k, stack, names, timeout=max(300.0, n * 0.5))
    figs.add(scenario, f"stop all {n} -> apiserver holds none of their objects", seconds, "s")
    return result


def _dstack_repeat(
    rep: int,
    k: kube.Kube,
    server: dstack_bench.DstackServer,
    n: int,
    limit: float,
    figs: Figures,
    notes: list[tuple[str, str]],
) -> burst.BurstResult:
    scenario = SCENARIOS["dstack"]
    result = dstack_bench.dstack_burst(k, server, n, prefix=f"d{rep}")
    burst.add_figures(figs, scenario, result, limit, accepted="submit->200 (runs/apply)")
    for error in result.errors[:3]:
        notes.append((scenario, f"repeat {rep + 1}: {error}"))
    if len(result.to_created) < n:
        notes.extend((scenario, f"dstack log: {line}") for line in server.errors())
    names = [f"d{rep}-{i}" for i in range(n)]
    seconds, sent = dstack_bench.stop_dstack_runs(k, server, names, timeout=max(180.0, n * 0.5))
    if sent > 1:
        notes.append((scenario, f"repeat {rep + 1}: the stop (abort) was sent {sent} times"))
    if math.isnan(seconds):
        notes.append(
            (scenario, f"repeat {rep + 1}: dstack left pods after stop; deleted them directly")
        )
    figs.add(scenario, f"stop (abort) all {n} -> no dstack pods or services", seconds, "s")
    return result


# --- scenario 4: bench/queue.py ----------------------------------------------------------


def _queue(home: Path, sizes: Sizes, figs: Figures, notes: list[tuple[str, str]]) -> None:
    scenario = SCENARIOS["queue"]
    try:
        from bench import queue as queue_bench
    except ImportError:
        figs.text(scenario, "queue churn", "TODO: bench/queue.py is not there yet")
        return
    sizes_note = f"{sizes.queue_runs} runs" if sizes.queue_runs else "bench/queue.py's sizes"
    notes.append((scenario, f"bench/queue.py's bench_pure, bench_store, bench_live; {sizes_note}"))
    overrides = {"RUNS": sizes.queue_runs} if sizes.queue_runs else {}
    # bench_live finds the cluster at $BERTH_HOME/local, which is this run's cluster.
    with environ({"BERTH_HOME": str(home)}), overridden(queue_bench, overrides):
        inventory = queue_bench.pools_inventory()
        for rep in range(sizes.repeats):
            _say(f"queue churn, repeat {rep + 1}")
            rows = queue_bench.bench_pure(inventory)
            rows += queue_bench.bench_store(inventory)
            rows += queue_bench.bench_live()
            add_rows(figs, scenario, rows)


# --- scenario 5: the inventory at scale --------------------------------------------------

LOAD_NAMESPACE = "bench-load"
LOAD_THREADS = 16  # pod creates in flight while loading the cluster
SPARED_NODE = "kwok-h100-0"  # bench/inventory.py's live part needs its GPUs free


def _inventory(tmp: Path, sizes: Sizes, figs: Figures, notes: list[tuple[str, str]]) -> None:
    from bench import inventory as inventory_bench

    scenario = SCENARIOS["inventory"]
    home = tmp / "inventory-home"  # BERTH_HOME for bench.inventory's live part
    directory = home / "local"
    _say(f"starting the inventory cluster ({sizes.inventory_pools.name})")
    state, _ = cluster.up(directory, pools_file=sizes.inventory_pools, timeout_s=1800)
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=60.0)
    try:
        nodes = len(k.call(k.core.list_node).items)
        shape = f"{nodes:,} nodes + {sizes.inventory_pods:,} pods"
        _say(f"creating {sizes.inventory_pods} pods")
        load_s = _load_pods(k, sizes.inventory_pods)
        notes.append((scenario, f"{shape}; the pods, bound by nodeName, took {load_s:.0f} s"))
        for _ in range(sizes.repeats):
            figs.add(
                scenario,
                f"time to first inventory, {shape}",
                _first_inventory(k),
                "s",
                note="InventoryWatcher start -> first snapshot (LIST nodes and pods, build)",
            )
        ensure_namespace(k, "berth")
        start = time.monotonic()
        stack = start_stack(state, tmp / "inventory-stack", namespace="berth", workers=1)
        try:
            published = _published_after(stack, start, notes)
            if math.isnan(published):  # it exited (lease lost under load): one more try
                start = time.monotonic()
                _restart_proxy(stack)
                published = _published_after(stack, start, notes)
            figs.add(
                scenario,
                "proxy worker: process start -> first inventory in Redis",
                published,
                "s",
                note="the stack's start, or the restart when the first one exited",
            )
            with environ({"BERTH_HOME": str(home)}):
                for rep in range(sizes.repeats):
                    _say(f"inventory change -> published, repeat {rep + 1}")
                    add_rows(figs, scenario, inventory_bench.bench_live())
            proxy = _proxy(stack)
            if is_running(proxy):
                figs.add(scenario, "proxy worker peak RSS", peak_rss_mib(proxy.pid), "MiB", shape)
            else:
                figs.text(scenario, "proxy worker peak RSS", "not read: it had exited (notes)")
            _record_rss(figs, stack, f"inventory stack, {shape}", notes)
        finally:
            stack.stop()
    finally:
        k.close()
        cluster.down(directory)
    overrides: dict[str, Any] = {"NODES": nodes, "PODS": sizes.inventory_pods}
    if sizes.inventory_pods < FULL.inventory_pods:
        overrides["EVENTS"] = 500  # quick: fewer timed events
    with overridden(inventory_bench, overrides):
        for rep in range(sizes.repeats):
            _say(f"inventory pure, repeat {rep + 1}")
            add_rows(figs, scenario, inventory_bench.bench_pure())


def _load_pods(k: kube.Kube, count: int) -> float:
    """``count`` small pods bound round-robin by nodeName (no scheduler), one GPU each while
    the node has one free; seconds taken."""
    ensure_namespace(k, LOAD_NAMESPACE)
    free = {
        n.metadata.name: int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
        for n in k.call(k.core.list_node).items
        if n.metadata.name != SPARED_NODE
    }
    names = sorted(free)
    bodies = []
    for i in range(count):
        node = names[i % len(names)]
        requests = {"cpu": "100m", "memory": "128Mi"}
        if free[node] > 0:
            free[node] -= 1
            requests["nvidia.com/gpu"] = "1"
        container = {
            "name": "main",
            "image": "busybox",
            "resources": {"requests": requests, "limits": requests},
        }
        bodies.append(
            {
                "metadata": {"name": f"load-{i}", "labels": {"bench": "inventory"}},
                "spec": {"nodeName": node, "containers": [container]},
            }
        )
    start = time.monotonic()
    burst.concurrently(
        lambda body: k.call(k.core.create_namespaced_pod, LOAD_NAMESPACE, body),
        bodies,
        LOAD_THREADS,
    )
    return time.monotonic() - start


def _first_inventory(k: kube.Kube) -> float:
    from workers.inventory_watch import InventoryWatcher

    watcher = InventoryWatcher(k, publish=lambda _inventory: None)
    start = time.monotonic()
    watcher.start()
    try:
        return time.monotonic() - start if watcher.wait_synced(600) else float("nan")
    finally:
        watcher.stop()


def _published_after(stack: Stack, start: float, notes: list[tuple[str, str]]) -> float:
    """Seconds from ``start`` until the proxy worker's first inventory is in Redis; NaN if
    the proxy worker exits first (then its last log line goes to the notes)."""
    from workers.context import build_context

    proxy = _proxy(stack)
    ctx = build_context(stack.settings())
    try:
        key = ctx.clusters.key_for("main")

        def published() -> bool:
            if ctx.store.inventory_json(key) is not None:
                return True
            if not is_running(proxy):
                raise _Exited(log_tail(proxy, 1))
            return False

        try:
            done = poll(published, timeout=600, interval=0.1)
        except _Exited as e:
            notes.append((SCENARIOS["inventory"], f"the proxy worker exited first: {e}"))
            return math.nan
        return time.monotonic() - start if done else math.nan
    finally:
        ctx.close()


def _proxy(stack: Stack) -> ProcessRecord:
    """The stack's newest proxy worker."""
    return [p for p in stack.processes if p.name.startswith("proxy-worker")][-1]


def _restart_proxy(stack: Stack) -> None:
    """Start another ``berth proxy-worker`` with the stack's environment; the stack stops
    it with the others."""
    with environ(stack.env):
        record = start_process(
            f"proxy-worker-{len(stack.processes)}",
            [BERTH, "proxy-worker"],
            log_dir=Path(_proxy(stack).log).parent,
        )
    stack.processes.append(record)


class _Exited(Exception):
    """The process being waited for is gone."""


# --- the report's prose ------------------------------------------------------------------


def _describe(sizes: Sizes) -> str:
    queue_runs = f"{sizes.queue_runs:,}" if sizes.queue_runs else "bench/queue.py's 10,000"
    nodes = ", ".join(f"{n:,}" for n in sizes.placement_nodes)
    return (
        f"{sizes.repeats} repeats; burst {sizes.burst_runs:,} runs; teardown "
        f"{sizes.teardown_runs:,} runs; inventory {sizes.inventory_pools.name} + "
        f"{sizes.inventory_pods:,} pods; queue {queue_runs} runs; placement {nodes} nodes;"
        f" credentials {sizes.credential_runs} runs; peers {sizes.peers_jobs:,} jobs;"
        f" projection {sizes.projection.kwok_nodes:,} KWOK nodes and"
        f" {sizes.projection.kwok_waiting:,} waiting runs;"
        f" {sizes.workers} worker process"
        f"{'es' if sizes.workers != 1 else ''} of 8 threads"
    )


# --- helpers -------------------------------------------------------------------------------


def _record_rss(
    figs: Figures, stack: Stack, label: str, notes: list[tuple[str, str]] | None = None
) -> None:
    """Each Berth process's peak RSS (VmHWM), and its children's, read before it stops."""
    for record in stack.processes:
        if not is_running(record) and notes is not None:
            last = log_tail(record, 1)
            notes.append((RSS, f"{record.name} ({label}) had exited before the end: {last}"))
        figs.add(RSS, f"berth {record.name} ({label})", peak_rss_mib(record.pid), "MiB")
        kids = children_of(record.pid)
        if kids:
            total = sum(peak_rss_mib(pid) for pid in kids)
            figs.add(
                RSS, f"berth {record.name} children ({label})", total, "MiB", f"{len(kids)} pids"
            )


def _keep_logs(records: list[ProcessRecord]) -> Path:
    """Copy process logs out of the temporary directory, which is removed at the end."""
    kept = LOGS / time.strftime("%Y%m%d-%H%M%S")
    kept.mkdir(parents=True, exist_ok=True)
    for record in records:
        source = Path(record.log)
        if source.exists():
            shutil.copyfile(source, kept / source.name)
    return kept


@contextmanager
def overridden(module: Any, values: dict[str, Any]) -> Iterator[None]:
    """Module-level sizes of another bench, set for a block (quick runs only) and restored."""
    old = {name: getattr(module, name) for name in values if hasattr(module, name)}
    for name in old:
        setattr(module, name, values[name])
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


@contextmanager
def _guarded(figs: Figures, scenario: str) -> Iterator[None]:
    # Deliberately broad: a harness that records the failure and goes on is worth
    # more than one that loses every other scenario's figures to one bug.
    try:
        yield
    except Exception as e:
        traceback.print_exc()
        figs.text(scenario, "scenario", f"failed: {type(e).__name__}: {str(e)[:300]}")


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    p.add_argument("--only", default="", help="comma-separated scenarios: names or 1-7, 9, 11, 12")
    p.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    p.add_argument("--repeats", type=int, help="repeats per scenario (default 3, quick 2)")
    p.add_argument("--runs", type=int, help="burst size (default 500, quick 40)")
    p.add_argument("--teardown-runs", type=int, help="runs to stop (default 1000, quick 60)")
    p.add_argument("--inventory-pods", type=int, help="pods for scenario 5 (default 10000)")
    p.add_argument("--workers", type=int, help="Celery worker processes of the burst stack (1)")
    p.add_argument("--peers-jobs", type=int, help="jobs per system in 11 peers (10000, quick 300)")
    p.add_argument(
        "--projection-nodes", type=int, help="KWOK nodes in 12 projection (10000, quick 200)"
    )
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="where to write")
    p.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md")
    return p


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    for flag, field in (
        ("repeats", "repeats"),
        ("runs", "burst_runs"),
        ("teardown_runs", "teardown_runs"),
        ("inventory_pods", "inventory_pods"),
        ("workers", "workers"),
        ("peers_jobs", "peers_jobs"),
    ):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.projection_nodes is not None:
        changes["projection"] = replace(sizes.projection, kwok_nodes=args.projection_nodes)
    return replace(sizes, **changes)


def _chosen(only: str, skip: str) -> set[str]:
    by_number = {v.split()[0]: k for k, v in SCENARIOS.items()}

    def names(text: str) -> set[str]:
        found = set()
        for item in filter(None, (t.strip() for t in text.split(","))):
            name = by_number.get(item, item)
            if name not in SCENARIOS:
                raise SystemExit(f"unknown scenario {item!r}; choose from {', '.join(SCENARIOS)}")
            found.add(name)
        return found

    return (names(only) or set(SCENARIOS)) - names(skip)


if __name__ == "__main__":
    main()
