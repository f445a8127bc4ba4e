"""The reliability suite at full size: faults survived, runs lost, duplicates, orphans.

Run by hand: ``.venv/bin/python -m bench.faults [--only worker-kills,redis,...]``.

Each fault gets its own local cluster (64 nodes x 8 H100, so a 1,000-run burst
fits with room) and its own Berth stack, exactly as ``tests/reliability``
builds them at CI size:

- ``worker-kills``: 1,000 runs, 100 SIGKILLs of random Celery workers, each
  restarted with the same argv; a third of the long runs stopped mid-way;
- ``redis``: Redis SIGKILLed after a third of a 1,000-run burst and restarted
  from its AOF; then the submit throughput under ``appendfsync everysec``
  against ``always`` (``CONFIG SET`` on the same Redis);
- ``apiserver``: kube-apiserver SIGKILLed for 60 s in the middle of a burst;
- ``proxy``: the proxy worker SIGKILLed and restarted;
- ``sentinel``: Berth's store and broker on a Sentinel group (3 redis-server,
  3 Sentinels, ``redis.min_replica_acks=1``), its primary SIGKILLed after a
  third of a 1,000-run burst and never restarted (issue 19);
- ``replicas``: 2 API processes on one address (``SO_REUSEPORT``), a Celery worker
  and a proxy worker on each of 2 "hosts"; one API process SIGKILLed after a third
  of a 1,000-run burst, then, in a second burst, the host holding the proxy lease
  (issue 19); neither is restarted;
- ``schemathesis``: at least 1,000 generated requests against the OpenAPI.

It prints one table of figures (the README's "Reliability" section).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import redis

from tests.reliability import faults
from tests.reliability.fuzz import fuzz_api
from tests.reliability.world import (
    Burst,
    Verdict,
    World,
    burst_specs,
    judge,
    open_sentinel_world,
    open_world,
    recorded_runs,
    stop_runs,
    wait_settled,
)
from tests.sentinel import SentinelGroup

POOLS = """
pools:
  - name: h100
    count: 64
    cpu: "208"
    memory: 1800Gi
    gpu: {vendor: nvidia, product: NVIDIA-H100-80GB-HBM3, count: 8, memory_mib: 81559}
"""
SCENARIOS = (
    "worker-kills", "redis", "apiserver", "proxy", "sentinel", "replicas", "schemathesis"
)  # fmt: skip
HOSTS = ("host-a", "host-b")
Rows = list[tuple[str, str]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--examples", type=int, default=60, help="schemathesis, per operation")
    args = parser.parse_args()
    rows: Rows = []
    with tempfile.TemporaryDirectory(prefix="berth-faults-") as tmp:
        pools = Path(tmp) / "pools.yaml"
        pools.write_text(POOLS)
        for name in args.only.split(","):
            started = time.perf_counter()
            group: SentinelGroup | None = None
            if name == "sentinel":
                world, group = open_sentinel_world(
                    Path(tmp) / name, pools_file=pools, timeout_s=300
                )
            elif name == "replicas":
                world = open_world(
                    Path(tmp) / name, pools_file=pools, timeout_s=300,
                    workers=2, apis=2, hosts=HOSTS, proxy_workers=2,
                )  # fmt: skip
            else:
                world = open_world(Path(tmp) / name, pools_file=pools, timeout_s=300)
            try:
                found = (
                    SCENARIO[name](world, args) if group is None else sentinel(world, group, args)
                )
            finally:
                world.close()
                if group is not None:
                    group.stop()
            found.append((f"{name}: wall time", f"{time.perf_counter() - started:.0f} s"))
            for what, figure in found:  # as they come: a later scenario may take long
                print(f"{what}: {figure}", flush=True)
            rows += found
    print("\n| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


def worker_kills(world: World, args: argparse.Namespace) -> Rows:
    rng = random.Random(20260108)
    specs = burst_specs(args.runs, prefix="wk")
    half = len(specs) // 2
    log = faults.KillLog()
    first = Burst(world.stack, specs[:half], threads=8).start()
    faults.kill_workers(world, rng, kills=args.kills // 2, log=log)
    first.join(timeout=600)
    long_runs = [s.name for s in specs[:half] if s.long and s.name in first.accepted]
    stop_runs(world.stack, long_runs[::2])
    second = Burst(world.stack, specs[half:], threads=8).start()
    faults.kill_workers(world, rng, kills=args.kills - args.kills // 2, log=log)
    second.join(timeout=600)
    accepted = first.accepted | second.accepted
    wait_settled(world, accepted, timeout=900)
    verdict = judge(world, accepted)
    return [
        ("worker kills: SIGKILLs survived (each restarted)", f"{log.kills}"),
        *_verdict_rows("worker kills", verdict, submitted=len(specs)),
    ]


def redis_kill(world: World, args: argparse.Namespace) -> Rows:
    specs = burst_specs(args.runs, prefix="rk")
    outage = faults.kill_redis_mid_burst(world, specs, kill_after=args.runs // 3)
    accepted = outage.burst.accepted
    wait_settled(world, accepted, timeout=900)
    verdict = judge(world, accepted)
    rows = [
        ("redis: answers during the burst", _answers(outage.burst.answers)),
        ("redis: other 5xx answers", f"{len(outage.burst.server_errors)}"),
        ("redis: SIGKILL to PING answered again", f"{outage.down_s:.2f} s"),
        *_verdict_rows("redis", verdict, submitted=len(specs)),
    ]
    return rows + fsync_cost(world)


def fsync_cost(world: World, n: int = 300) -> Rows:
    """Submit throughput (202s per second, 8 client threads) under each fsync policy."""
    client: redis.Redis[bytes] = redis.Redis.from_url(world.cluster.redis_url)
    rows: Rows = []
    try:
        for policy in ("everysec", "always", "everysec"):
            client.config_set("appendfsync", policy)
            burst = Burst(world.stack, burst_specs(n, prefix=f"fs-{policy}-{len(rows)}"), threads=8)
            burst.run()
            rate = len(burst.accepted) / burst.seconds
            rows.append((f"redis: submit throughput, appendfsync {policy}", f"{rate:.0f} runs/s"))
            ops = _redis_set_rate(client)
            rows.append((f"redis: raw SET rate, appendfsync {policy}", f"{ops:.0f} ops/s"))
    finally:
        client.config_set("appendfsync", "everysec")
        client.close()
    return rows


def _redis_set_rate(client: redis.Redis[bytes], n: int = 2000) -> float:
    start = time.perf_counter()
    for i in range(n):
        client.set(f"bench-fsync:{i}", "x")
    elapsed = time.perf_counter() - start
    client.delete(*[f"bench-fsync:{i}" for i in range(n)])
    return n / elapsed


def sentinel(world: World, group: SentinelGroup, args: argparse.Namespace) -> Rows:
    specs = burst_specs(args.runs, prefix="sf")
    failover = faults.kill_primary_mid_burst(world, group, specs, kill_after=args.runs // 3)
    accepted = failover.burst.accepted
    wait_settled(world, accepted, timeout=900)
    known = len(world.ctx.store.find_runs(list(accepted.values())))
    verdict = judge(world, accepted)
    return [
        ("sentinel: answers during the burst", _answers(failover.burst.answers)),
        ("sentinel: other 5xx answers", f"{len(failover.burst.server_errors)}"),
        ("sentinel: SIGKILL to first acknowledged write", f"{failover.write_after_s:.2f} s"),
        ("sentinel: runs answered 202 / known after the failover", f"{len(accepted)} / {known}"),
        *_verdict_rows("sentinel", verdict, submitted=len(specs)),
    ]


def replicas(world: World, args: argparse.Namespace) -> Rows:
    # One long run in ten: both bursts' long runs hold their GPUs to the end.
    specs = burst_specs(args.runs, prefix="ak", long_every=10)
    api = faults.kill_mid_burst(world, specs, kill_after=args.runs // 3, victims=faults.busiest_api)
    burst = api.burst
    recorded = recorded_runs(world, "ak")
    known = len(world.ctx.store.find_runs(list(burst.accepted.values())))
    started = time.perf_counter()
    wait_settled(world, recorded, timeout=900)
    settled_s = time.perf_counter() - started
    rows = [
        ("replicas, API killed: answers during the burst", _answers(burst.answers)),
        ("replicas, API killed: other 5xx answers", f"{len(burst.server_errors)}"),
        ("replicas, API killed: submissions each process answered before the kill",
         _answers(api.submissions_before_kill)),
        ("replicas, API killed: runs answered 202 / known afterwards",
         f"{len(burst.accepted)} / {known}"),
        ("replicas, API killed: runs recorded but unanswered (broken connections)",
         f"{len(recorded) - len(burst.accepted)}"),
        ("replicas, API killed: health checks answered on the address after it",
         f"{api.address_answers} / {faults.ADDRESS_PROBES}"),
        ("replicas, API killed: burst end to every recorded run settled", f"{settled_s:.1f} s"),
        *_verdict_rows("replicas, API killed", judge(world, recorded), submitted=len(specs)),
    ]  # fmt: skip

    leader = faults.proxy_leader(world)
    host = next(h for h, names in world.stack.hosts.items() if leader in names)
    specs = burst_specs(args.runs, prefix="hk", long_every=10)
    victims = world.stack.hosts[host]
    lost_host = faults.kill_mid_burst(
        world, specs, kill_after=args.runs // 3, victims=lambda _: victims
    )
    burst = lost_host.burst
    started = time.perf_counter()
    wait_settled(world, burst.accepted, timeout=900)
    settled_s = time.perf_counter() - started
    return [
        *rows,
        ("replicas, host killed: processes killed", ", ".join(lost_host.victims)),
        ("replicas, host killed: tasks its worker held, unacknowledged", ", ".join(lost_host.held)),
        ("replicas, host killed: answers during the burst", _answers(burst.answers)),
        ("replicas, host killed: burst end to every run settled", f"{settled_s:.1f} s"),
        ("replicas, host killed: proxy lease now held by", faults.proxy_leader(world)),
        *_verdict_rows("replicas, host killed", judge(world, burst.accepted),
                       submitted=len(specs)),
    ]  # fmt: skip


def apiserver_outage(world: World, args: argparse.Namespace) -> Rows:
    n = max(args.runs // 5, 40)
    specs = burst_specs(n, prefix="ao")
    outage = faults.stop_apiserver_mid_burst(
        world, specs[: n // 2], specs[n // 2 :], outage_s=args.outage
    )
    accepted = outage.before.accepted | outage.during.accepted
    wait_settled(world, accepted, timeout=900)
    verdict = judge(world, accepted)
    return [
        ("apiserver: outage", f"{outage.down_s:.0f} s"),
        ("apiserver: runs accepted during the outage", f"{len(outage.during.accepted)}"),
        ("apiserver: return to first new pod", f"{outage.resumed_s:.1f} s"),
        *_verdict_rows("apiserver", verdict, submitted=n),
    ]


def proxy_kill(world: World, args: argparse.Namespace) -> Rows:
    takeover = faults.kill_proxy_worker(world, cordon="kwok-h100-0")
    same = takeover.jump_uids_after == takeover.jump_uids_before
    return [
        ("proxy worker: SIGKILL to new leader", f"{takeover.leader_after_s:.1f} s"),
        ("proxy worker: SIGKILL to fresh inventory", f"{takeover.fresh_after_s:.1f} s"),
        (
            "proxy worker: jump host objects recreated",
            "0" if same else f"{takeover.jump_uids_before} -> {takeover.jump_uids_after}",
        ),
    ]


def schemathesis_run(world: World, args: argparse.Namespace) -> Rows:
    figures = fuzz_api(world.stack.url, world.stack.admin_token, examples=args.examples)
    for failure in figures.failures[:20]:
        print(failure)
    return [
        ("schemathesis: operations", f"{figures.operations}"),
        ("schemathesis: generated cases", f"{figures.cases}"),
        ("schemathesis: failures (5xx or off-schema)", f"{len(figures.failures)}"),
        ("schemathesis: statuses seen", _answers(figures.statuses)),
    ]


def _verdict_rows(label: str, v: Verdict, *, submitted: int) -> Rows:
    return [
        (f"{label}: runs submitted / accepted (202)", f"{submitted} / {v.accepted}"),
        (f"{label}: accepted runs lost", f"{len(v.lost)}"),
        (f"{label}: runs not running or finished", f"{len(v.unsettled)}"),
        (f"{label}: runs failed", f"{len(v.failed)}"),
        (f"{label}: jobs started twice (pod watch)", f"{len(v.started_twice)}"),
        (f"{label}: orphans left by the faults / after one sweep",
         f"{len(v.orphans_left)} / {len(v.orphans_after_sweep)}"),
    ]  # fmt: skip


def _answers(counts: object) -> str:
    assert isinstance(counts, dict)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))


SCENARIO = {
    "worker-kills": worker_kills,
    "redis": redis_kill,
    "apiserver": apiserver_outage,
    "proxy": proxy_kill,
    "replicas": replicas,
    "schemathesis": schemathesis_run,
}


if __name__ == "__main__":
    main()
