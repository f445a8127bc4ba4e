"""Replicas (issue 19): two API processes on one address, Celery workers and proxy
workers on two "hosts"; one API process, then one whole host, SIGKILLed mid-burst.

The API processes share one loopback port with ``SO_REUSEPORT`` (``api.reuse_port``),
as a Kubernetes Service spreads connections over the API's pods. A killed API process
breaks the requests in flight on it: those clients got no answer (no 202), so they
are counted apart, and whatever that process had already recorded must settle too.
A host is a Celery worker named ``w<i>@<host>`` and a proxy worker, each a process
group; killing one leaves its unacknowledged messages to beat's sweep and its lease to
the standby. Each kill lands mid-work: the API process is frozen (SIGSTOP) until a
request waits unread on it, the host's worker until it holds a task it has not
finished. ``bench/faults.py --only replicas`` runs the same at 1,000 runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.local.processes import ProcessRecord, is_running
from tests.polling import wait_until
from tests.reliability.faults import (
    ADDRESS_PROBES,
    busiest_api,
    every_api_answers,
    kill_mid_burst,
    proxy_leader,
)
from tests.reliability.world import (
    World,
    burst_specs,
    judge,
    open_world,
    recorded_runs,
    wait_settled,
)
from workers.lease import LEASE_TTL_S

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

RUNS = 200  # bench/faults.py's "replicas" scenario submits 1,000
HOSTS = ("host-a", "host-b")


@pytest.fixture(scope="module")
def replica_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = open_world(
        tmp_path_factory.mktemp("replicas"), workers=2, apis=2, hosts=HOSTS, proxy_workers=2
    )
    try:
        yield w
    finally:
        w.close()


def test_an_api_process_killed_mid_burst_loses_no_accepted_run_and_the_address_keeps_answering(
    replica_world: World, record_property: Callable[[str, object], None]
) -> None:
    world = replica_world
    # One long run in ten: they hold their GPU until the end, and must all fit.
    specs = burst_specs(RUNS, prefix="ak", long_every=10)
    # Both processes answer on the one address.
    wait_until(lambda: every_api_answers(world), timeout=60, what="each API process answering")
    kill = kill_mid_burst(world, specs, kill_after=RUNS // 3, victims=busiest_api)
    burst = kill.burst
    [victim] = kill.victims
    (survivor,) = {"api-0", "api-1"} - {victim}
    record_property("answers", dict(burst.answers))
    log.info("answers with %s killed mid-burst: %s", victim, dict(burst.answers))
    assert kill.submissions_before_kill[victim] > 0, kill
    # A client either got its answer or lost its connection with the killed process.
    assert burst.server_errors == []
    assert set(burst.answers) <= {"202", "connection"}, burst.answers
    # The kill came with a request in flight on the killed process (faults.py waits for one).
    assert burst.answers["connection"] > 0, burst.answers
    assert len(burst.accepted) + burst.answers["connection"] == RUNS
    # The survivor kept answering on the same address, to every new connection.
    assert kill.address_answers == ADDRESS_PROBES
    assert is_running(world.process(survivor))

    # Every 202 is known; the only others are requests the killed process had recorded
    # but not answered, at most one per broken connection.
    recorded = recorded_runs(world, "ak")
    assert {n: recorded.get(n) for n in burst.accepted} == burst.accepted
    unanswered = len(recorded) - len(burst.accepted)
    record_property("recorded_unanswered", unanswered)
    log.info("runs the killed process recorded but did not answer: %d", unanswered)
    assert unanswered <= burst.answers["connection"]
    # All of them settle, answered or not: none left submitted or provisioning.
    wait_settled(world, recorded, timeout=300)
    verdict = judge(world, recorded)
    assert verdict.started_twice == {}
    assert verdict.problems() == [], world.stack.logs()

    # A replacement joins the same address.
    restarted = world.stack.restart(victim)
    wait_until(
        lambda: _log(restarted).count("Application startup complete") >= 2,
        timeout=60,
        what=f"{victim} listening again",
    )


def test_a_worker_host_killed_mid_burst_loses_no_run_and_its_work_finishes_on_the_other(
    replica_world: World,
) -> None:
    world = replica_world
    # The host whose proxy worker leads: its worker and the lease both go.
    leader = proxy_leader(world)
    host = next(h for h, names in world.stack.hosts.items() if leader in names)
    victims = world.stack.hosts[host]
    assert any(name.startswith("worker") for name in victims), world.stack.hosts

    specs = burst_specs(RUNS, prefix="hk", long_every=10)
    kill = kill_mid_burst(world, specs, kill_after=RUNS // 3, victims=lambda _: victims)
    burst = kill.burst
    assert burst.answers == {"202": RUNS}, (burst.answers, burst.server_errors)
    # The host was lost mid-task: its worker held a message it never acknowledged.
    assert kill.held, kill
    log.info("tasks the killed worker held: %s", kill.held)
    assert kill.address_answers == ADDRESS_PROBES

    # What the dead worker held (acknowledged late) is sent again by beat's sweep and
    # taken by the other host's worker; the standby proxy worker takes the lease.
    wait_settled(world, burst.accepted, timeout=300)
    verdict = judge(world, burst.accepted)
    assert verdict.lost == []
    assert verdict.started_twice == {}
    assert verdict.problems() == [], world.stack.logs()
    survivors = [p for h, names in world.stack.hosts.items() if h != host for p in names]
    assert all(is_running(world.process(name)) for name in survivors)
    new_leader = wait_until(
        lambda: proxy_leader(world) in survivors and proxy_leader(world),
        timeout=LEASE_TTL_S + 30,
        what="the other host's proxy worker leading",
    )
    assert new_leader != leader


def _log(record: ProcessRecord) -> str:
    return Path(record.log).read_text(errors="replace")
