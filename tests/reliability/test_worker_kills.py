"""SIGKILLed Celery workers during a burst: no run lost, none started twice, no orphan.

The full-size version (1,000 runs, 100 kills) is ``python -m bench.faults``.
"""

from __future__ import annotations

import random

import pytest

from tests.reliability.faults import KillLog, kill_workers
from tests.reliability.world import Burst, World, burst_specs, judge, stop_runs, wait_settled

pytestmark = pytest.mark.integration

RUNS = 60  # 1,000 in the bench
KILLS = 10  # 100 in the bench


def test_workers_killed_mid_burst_lose_no_run_start_none_twice_and_leave_no_orphans(
    world: World,
) -> None:
    rng = random.Random(20260108)  # a fixed seed: a failure can be replayed
    specs = burst_specs(RUNS, prefix="wk")
    first, second = specs[: RUNS // 2], specs[RUNS // 2 :]
    log = KillLog()

    burst = Burst(world.stack, first, threads=4).start()
    kill_workers(world, rng, kills=KILLS // 2, log=log)
    burst.join(timeout=120)
    # Half the long runs are stopped while workers keep dying: teardown is hit too.
    stopping = [s.name for s in first if s.long and s.name in burst.accepted][::2]
    stop_runs(world.stack, stopping)
    more = Burst(world.stack, second, threads=4).start()
    kill_workers(world, rng, kills=KILLS - KILLS // 2, log=log)
    more.join(timeout=120)

    accepted = burst.accepted | more.accepted
    assert len(accepted) == RUNS, (burst.answers, more.answers)
    wait_settled(world, accepted, timeout=180)
    verdict = judge(world, accepted)
    assert verdict.problems() == [], world.stack.logs()
    assert log.kills == KILLS
