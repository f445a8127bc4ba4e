"""Berth on a Redis Sentinel group (3 redis-server, 3 Sentinels): the primary
SIGKILLed mid-burst, and writes refused while no replica can acknowledge them.

Berth waits for one replica's acknowledgement (``redis.min_replica_acks=1``)
before it answers 202 and before a worker acts on a state change, so a failover
loses nothing Berth promised. ``bench/sentinel.py`` measures the failover time
and what the wait costs a submission.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.local.processes import is_running, stop_process
from shared.state.records import RunStatus
from tests.polling import wait_until
from tests.reliability.faults import kill_primary_mid_burst
from tests.reliability.world import (
    Burst,
    RunSpec,
    World,
    burst_specs,
    judge,
    open_sentinel_world,
    statuses,
    wait_settled,
)
from tests.sentinel import SentinelGroup

pytestmark = pytest.mark.integration

RUNS = 200  # bench/faults.py's "sentinel" scenario submits 1,000


@pytest.fixture(scope="module")
def sentinel_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[World, SentinelGroup]]:
    world, group = open_sentinel_world(tmp_path_factory.mktemp("sentinel"), min_replica_acks=1)
    try:
        yield world, group
    finally:
        world.close()
        group.stop()


def test_no_accepted_run_is_lost_or_started_twice_when_the_primary_is_killed(
    sentinel_world: tuple[World, SentinelGroup],
) -> None:
    world, group = sentinel_world
    # One long run in ten: they hold their GPU until the end, and must all fit.
    specs = burst_specs(RUNS, prefix="sf", long_every=10)
    failover = kill_primary_mid_burst(world, group, specs, kill_after=RUNS // 3)
    burst = failover.burst
    assert failover.new_primary not in (0, failover.old_primary)
    assert failover.accepted_before_kill < len(burst.accepted)
    # While the primary was away the API answered 503 (retry later), never another 5xx.
    assert burst.server_errors == []
    assert set(burst.answers) <= {"202", "503"}, burst.answers
    assert len(burst.accepted) == RUNS  # every client got its run taken in the end
    # Every worker reconnected by itself through the Sentinels; none exited on the way.
    assert [w.name for w in world.workers() if not is_running(w)] == [], world.stack.logs()

    # Every run answered 202 is known on the new primary, and each one moves on.
    known = world.ctx.store.find_runs(list(burst.accepted.values()))
    assert len(known) == len(burst.accepted)
    wait_settled(world, burst.accepted, timeout=300)
    verdict = judge(world, burst.accepted)
    assert verdict.lost == []
    assert verdict.started_twice == {}
    assert verdict.problems() == [], world.stack.logs()


def test_without_a_replica_to_acknowledge_a_submission_is_refused_and_nothing_is_kept(
    sentinel_world: tuple[World, SentinelGroup],
) -> None:
    world, group = sentinel_world
    primary = group.primary_port()
    replicas = [
        (port, record)
        for port, record in zip(group.server_ports, group.servers, strict=True)
        if port != primary and is_running(record)
    ]
    for _, record in replicas:
        stop_process(record)
    wait_until(lambda: group.replicas_of_primary() == 0, timeout=30, what="no replica left")
    spec = RunSpec(name="unacked", long=False)
    try:
        with world.stack.client() as http:
            r = http.post("/api/projects/main/runs", json={"configuration": spec.configuration()})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "unavailable"
            assert "min_replica_acks" in error["message"]
            # Withdrawn unless a scheduling pass already moved it (it then waits, and
            # acts only once replicas acknowledge its own write).
            seen = http.get("/api/projects/main/runs/unacked")
            assert seen.status_code in (200, 404), seen.text
    finally:
        for port, _ in replicas:
            group.restart_server(port)
    wait_until(lambda: group.replicas_of_primary() >= 1, timeout=60, what="a replica back")

    # The client's retry, once a replica is back, is taken: the same run if it was
    # kept, never a second one; and it runs. A kept run is let finish first: a
    # finished run's name is free, but not for this retry.
    if seen.status_code == 200:
        kept = {"unacked": seen.json()["id"]}
        wait_until(
            lambda: (statuses(world, kept)["unacked"] or RunStatus.SUBMITTED).is_finished,
            timeout=120,
            what="the kept run finished",
        )
    retry = Burst(world.stack, [spec], threads=1)
    retry.run()
    assert retry.answers == {"202": 1}, retry.server_errors
    if seen.status_code == 200:
        assert retry.accepted["unacked"] == seen.json()["id"]
    with world.stack.client() as http:
        listed = http.get("/api/projects/main/runs", params={"all": True, "prefix": "unacked"})
    assert [r["id"] for r in listed.json() if r["name"] == "unacked"] == [retry.accepted["unacked"]]
    wait_settled(world, retry.accepted, timeout=120)
