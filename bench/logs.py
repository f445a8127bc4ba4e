"""Run output and run history at scale (issue 23): the collector, the log store, ``berth ps``.

Run by hand: ``.venv/bin/python -m bench.logs`` (its own cluster from
``bench/pools-burst.yaml``, a few minutes). Three parts, one invocation:

* **Collector throughput and delay.** ``--jobs`` one-GPU tasks run on KWOK
  nodes; KWOK serves each pod's log from a file (cli/local/pod_logs.py), and a
  writer appends timestamped lines to every file at once, as ``--jobs``
  containers printing together, for ``--seconds``. The path measured is the
  production one: apiserver -> kubelet log endpoint -> the collector's follow
  streams -> Redis. Figures: lines per second stored (all jobs), the delay
  from a line written to a ``berth logs -f`` follower (the API's stream)
  receiving it, p50/p99 over every line of ``--followed`` jobs, the collector's
  peak RSS, and Redis memory per MiB of output stored.
* **Redis memory per 1,000 finished runs** (records, jobs, events; no output),
  from ``INFO memory`` before and after writing them.
* **``berth ps`` with 100,000 finished runs** in the project (``--history``):
  the API's list of active runs and a page of history, p50/p99 over 50 calls.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bench.burst import berth_burst, stop_berth_runs
from bench.common import Figures, ensure_namespace, pct, peak_rss_mib, table
from cli.local import cluster, pod_logs
from shared import kube
from shared.state.records import Event, Job, Run, RunStatus
from shared.state.store import Store
from tests.stack import Stack, start_stack

SCENARIO = "10 logs"
NAMESPACE = "berth"
HERE = Path(__file__).resolve().parent
JOBS = 50
SECONDS = 20.0
RATE = 500  # lines per second per job: 25,000/s over 50 jobs
FOLLOWED = 5
HISTORY = 100_000
_LINE_PAD = 60  # bytes of text after the sequence and time: a typical training log line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.logs", description=__doc__)
    p.add_argument("--jobs", type=int, default=JOBS)
    p.add_argument("--seconds", type=float, default=SECONDS)
    p.add_argument("--rate", type=int, default=RATE, help="lines per second per job")
    p.add_argument("--followed", type=int, default=FOLLOWED)
    p.add_argument("--history", type=int, default=HISTORY)
    args = p.parse_args(argv)
    figs = Figures()
    with tempfile.TemporaryDirectory(prefix="berth-bench-logs-") as tmp:
        directory = Path(tmp) / "local"
        _say("starting the local cluster (bench/pools-burst.yaml)")
        state, _ = cluster.up(directory, pools_file=HERE / "pools-burst.yaml", timeout_s=600)
        k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
        try:
            ensure_namespace(k, NAMESPACE)
            stack = start_stack(state, Path(tmp) / "stack", namespace=NAMESPACE)
            try:
                collector(figs, k, state, stack, args)
                history(figs, state, stack, args.history)
            finally:
                stack.stop()
        finally:
            k.close()
            cluster.down(directory)
    print(table(figs))


def collector(
    figs: Figures, k: kube.Kube, state: cluster.ClusterState, stack: Stack, args: argparse.Namespace
) -> None:
    n = args.jobs
    prefix = "lg"
    names = [f"{prefix}-{i}" for i in range(n)]
    files = {
        name: pod_logs.set_pod_logs(
            k, Path(state.directory), namespace=NAMESPACE, pod=f"berth-main-{name}-0-0"
        )
        for name in names
    }
    store = Store.connect(
        state.redis_url, prefix=stack.env["BERTH_REDIS__KEY_PREFIX"], timeout_s=10
    )
    try:
        _say(f"{n} tasks, each printing {args.rate} lines/s for {args.seconds:.0f} s")
        burst = berth_burst(k, stack, n, prefix=prefix)
        if len(burst.to_running) < n:
            raise SystemExit(
                f"only {len(burst.to_running)} of {n} runs Running: {burst.errors[:3]}"
            )
        redis_before = _redis_used(state.redis_url)
        followers = [_Follower(stack, name) for name in names[: args.followed]]
        for f in followers:
            f.start()
        time.sleep(2.0)  # the followers have their streams open before the first line
        written = _write(files, rate=args.rate, seconds=args.seconds)
        stored_at = _wait_stored(store, names, written, timeout=120.0)
        elapsed = stored_at - written.started
        figs.add(
            SCENARIO, f"lines stored per second, {n} jobs printing", written.lines / elapsed, "/s"
        )
        figs.add(SCENARIO, "lines written", written.lines, "")
        for f in followers:
            f.stop()
        delays = [d for f in followers for d in f.delays]
        missing = written.per_job * len(followers) - len(delays)
        figs.add(
            SCENARIO,
            "line printed -> berth logs -f shows it, p50",
            statistics.median(delays) * 1000,
            "ms",
            note=f"{len(delays)} lines of {len(followers)} followed jobs; {missing} not seen",
        )
        figs.add(
            SCENARIO, "line printed -> berth logs -f shows it, p99", pct(delays, 99) * 1000, "ms"
        )
        collector_pid = next(p.pid for p in stack.processes if p.name == "log-collector")
        figs.add(SCENARIO, "collector peak RSS", peak_rss_mib(collector_pid), "MiB")
        mib = written.bytes / (1024 * 1024)
        used = (_redis_used(state.redis_url) - redis_before) / (1024 * 1024)
        figs.add(
            SCENARIO, "Redis memory per MiB of output", used / mib, "MiB", note=f"{mib:.0f} MiB"
        )
    finally:
        stop_berth_runs(k, stack, names, timeout=120)
        store.close()


def history(figs: Figures, state: cluster.ClusterState, stack: Stack, runs: int) -> None:
    """Finished runs written straight to Redis under a prefix of their own, then a second
    API on that prefix answers ``berth ps`` (active runs) and ``berth ps -a`` (a page)."""
    prefix = f"hist{int(time.time())}"
    store = Store.connect(state.redis_url, prefix=prefix, timeout_s=30)
    try:
        before = _redis_used(state.redis_url)
        _say(f"writing {runs} finished runs")
        start = time.time() - runs
        for i in range(runs):
            _finished_run(store, "main", f"old-{i}", start + i)
            if i + 1 == 1000:
                per_1000 = (_redis_used(state.redis_url) - before) / (1024 * 1024)
                figs.add(SCENARIO, "Redis memory per 1,000 finished runs", per_1000, "MiB")
    finally:
        store.close()
    _say("timing berth ps against the history")
    other = start_stack(
        state,
        Path(stack.home).parent / "hist-stack",
        namespace=NAMESPACE,
        env={"BERTH_REDIS__KEY_PREFIX": prefix},
    )
    try:
        with other.client() as http:
            active = _timed(lambda: http.get("/api/projects/main/runs"))
            page = _timed(lambda: http.get("/api/projects/main/runs", params={"all": "true"}))
    finally:
        other.stop()
    for what, times in (("berth ps (active runs)", active), ("berth ps -a (a page)", page)):
        label = f"{what}, {runs:,} finished runs in the project"
        figs.add(SCENARIO, f"{label}, p50", statistics.median(times) * 1000, "ms")
        figs.add(SCENARIO, f"{label}, p99", pct(times, 99) * 1000, "ms")


def _timed(call: Callable[[], httpx.Response]) -> list[float]:
    out = []
    for _ in range(50):
        t0 = time.perf_counter()
        call().raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def _finished_run(store: Store, project: str, name: str, at: float) -> None:
    run = Run(
        id=f"h{name}",
        project=project,
        name=name,
        user="admin",
        configuration={"type": "task", "commands": ["python train.py"]},
        configuration_type="task",
        status=RunStatus.DONE,
        submitted_at=at,
    )
    job = Job(id=f"j{name}", run_id=run.id, project=project, run_name=name, status=RunStatus.DONE)
    run.job_ids = [job.id]
    store.create_run(run, [job], Event(at=at, kind="status", message="submitted"))
    store.save_run(run, Event(at=at + 1, kind="status", status=RunStatus.DONE, message="done"))


class _Written:
    def __init__(self, per_job: int, jobs: int, started: float, size: int) -> None:
        self.per_job, self.lines, self.started, self.bytes = per_job, per_job * jobs, started, size


def _write(files: dict[str, Path], *, rate: int, seconds: float) -> _Written:
    """Append ``rate`` lines a second to every file, in 10 ms slices, for ``seconds``."""
    ticks = int(seconds * 100)
    per_tick = max(1, rate // 100)
    handles = {name: path.open("ab") for name, path in files.items()}
    started = time.time()
    size = 0
    seq = 0
    try:
        for tick in range(ticks):
            due = started + tick / 100
            with contextlib.suppress(ValueError):
                time.sleep(max(0.0, due - time.time()))
            now = time.time()
            stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
            )
            lines = b"".join(
                f"{stamp} stdout F seq {seq + i} t {now:.6f} {'x' * _LINE_PAD}\n".encode()
                for i in range(per_tick)
            )
            for h in handles.values():
                h.write(lines)
                h.flush()
            size += len(lines) * len(handles)
            seq += per_tick
    finally:
        for h in handles.values():
            h.close()
    return _Written(seq, len(files), started, size)


def _wait_stored(store: Store, names: list[str], written: _Written, *, timeout: float) -> float:
    """When every job's lines are in the store (the last one's time)."""
    from shared.runlogs.store import LogStore

    logs = LogStore(store, cap_bytes=1 << 40)
    deadline = time.time() + timeout
    pending = set(names)
    jobs = {name: _job_id(store, name) for name in names}
    last = time.time()
    while pending and time.time() < deadline:
        for name in list(pending):
            attempts = logs.attempts(jobs[name])
            if attempts and logs.meta(jobs[name], max(attempts)).lines >= written.per_job:
                pending.discard(name)
                last = time.time()
        time.sleep(0.05)
    if pending:
        raise SystemExit(f"{len(pending)} jobs' output not stored within {timeout:.0f} s")
    return last


def _job_id(store: Store, name: str) -> str:
    return store.run_by_name("main", name).job_ids[0]


class _Follower:
    """``berth logs -f`` through the API: when each line arrives, against its write time."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack, self.name = stack, name
        self.delays: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        url = f"{self.stack.url}/api/projects/main/runs/{self.name}/logs"
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream(
                "GET",
                url,
                params={"follow": "true"},
                headers=headers,
                timeout=httpx.Timeout(10, read=60),
            ) as resp,
        ):
            for line in resp.iter_lines():
                arrived = time.time()
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "seq" and parts[2] == "t":
                    self.delays.append(arrived - float(parts[3]))
                if self._stop.is_set():
                    return


def _redis_used(url: str) -> int:
    client: redis.Redis[bytes] = redis.Redis.from_url(url, socket_timeout=10)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
