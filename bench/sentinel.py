"""Redis Sentinel (issue 19), by hand: ``.venv/bin/python -m bench.sentinel``.

- **failover**: a Sentinel group alone (``tests/sentinel.py``: 3 redis-server,
  3 Sentinels, ``down-after-milliseconds`` 1000); ``--failovers`` times: SIGKILL
  the primary, then time until a client going through the Sentinels (no retry
  backoff of its own) writes and a replica acknowledges it; the killed node is
  started again and rejoins as a replica before the next kill.
- **replica wait**: Berth's cost of ``redis.min_replica_acks=1`` against 0 on the
  same group: ``Store.create_run`` alone, and a whole submission through the API
  (one local cluster and Berth stack; the API restarted with the other setting),
  one client in a row, p50 and p99 of each, rounds alternating.

The 1,000-run burst with the primary killed is ``bench.faults --only sentinel``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

from bench.common import pct
from shared.settings import RedisSettings
from shared.state.store import Store
from tests.factories import one_job_run, submitted
from tests.polling import wait_until
from tests.reliability.faults import acknowledged_write
from tests.reliability.world import RunSpec, open_sentinel_world, sigkill
from tests.sentinel import (
    SentinelGroup,
    acknowledging_replicas,
    start_sentinel_group,
)

Rows = list[tuple[str, str]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--writes", type=int, default=2000, help="Store.create_run, per round")
    parser.add_argument("--submits", type=int, default=200, help="API submissions, per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows: Rows = []
    with tempfile.TemporaryDirectory(prefix="berth-sentinel-") as tmp:
        group = start_sentinel_group(Path(tmp) / "group")
        try:
            rows += failovers(group, args.failovers)
            rows += store_writes(group, args.writes, args.rounds)
        finally:
            group.stop()
        rows += api_submits(Path(tmp) / "world", args.submits, args.rounds)
    print("\n| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


def failovers(group: SentinelGroup, n: int) -> Rows:
    settings = RedisSettings(sentinels=group.addresses, min_replica_acks=1)
    times = []
    for _ in range(n):
        port = group.primary_port()
        assert port is not None
        store = Store.from_settings(settings, timeout_s=2, retries=0)
        try:
            acknowledged_write(store)  # connected to the primary before the kill
            start = time.perf_counter()
            sigkill(group.server(port))
            wait_until(
                partial(acknowledged_write, store), timeout=60, what="a write after the failover"
            )
            times.append(time.perf_counter() - start)
        finally:
            store.close()
        group.restart_server(port)  # back as a replica of the new primary
        wait_until(lambda: group.replicas_of_primary() == 2, timeout=60, what="both replicas back")
        print(f"failover: {times[-1]:.2f} s", flush=True)
    return [
        (
            f"Sentinel failover, SIGKILL to first acknowledged write ({n} kills)",
            f"median {statistics.median(times):.2f} s, max {max(times):.2f} s",
        )
    ]


def store_writes(group: SentinelGroup, n: int, rounds: int) -> Rows:
    """``Store.create_run`` (one run, one job) in a row, with and without the wait."""
    samples: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(rounds):
        for acks in (0, 1):
            settings = RedisSettings(
                sentinels=group.addresses, min_replica_acks=acks, key_prefix="bench-sentinel"
            )
            store = Store.from_settings(settings)
            try:
                for _ in range(n):
                    run, jobs = one_job_run(user="bench")
                    start = time.perf_counter()
                    store.create_run(run, jobs, submitted())
                    samples[acks].append(time.perf_counter() - start)
            finally:
                store.close()
    assert acknowledging_replicas(group.primary_port() or 0) == 2
    return [
        (f"Store.create_run, min_replica_acks={acks} ({len(s)} runs)", _latency(s))
        for acks, s in samples.items()
    ]


def api_submits(directory: Path, n: int, rounds: int) -> Rows:
    """Whole submissions (HTTP, validation, store, wake) in a row, one client."""
    world, group = open_sentinel_world(directory, min_replica_acks=1)
    samples: dict[int, list[float]] = {0: [], 1: []}
    try:
        for r in range(rounds):
            for acks in (0, 1):
                world.stack.env["BERTH_REDIS__MIN_REPLICA_ACKS"] = str(acks)
                world.stack.restart("api")
                wait_until(lambda: _healthy(world.stack.url), timeout=60, what="the API back")
                with world.stack.client() as http:
                    for i in range(n):
                        spec = RunSpec(name=f"lat-{acks}-{r}-{i}", long=False, short_s=1)
                        start = time.perf_counter()
                        answer = http.post(
                            "/api/projects/main/runs", json={"configuration": spec.configuration()}
                        )
                        samples[acks].append(time.perf_counter() - start)
                        assert answer.status_code == 202, answer.text
    finally:
        world.close()
        group.stop()
    return [
        (f"API submission, min_replica_acks={acks} ({len(s)} runs)", _latency(s))
        for acks, s in samples.items()
    ]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _latency(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms"


if __name__ == "__main__":
    main()
