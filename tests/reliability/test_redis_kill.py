"""Redis SIGKILLed mid-burst and restarted from its AOF (``appendfsync everysec``).

Every run the API answered 202 for is still there, the API and the workers
reconnect by themselves, and the runs go on to settle. The cost of
``appendfsync always`` against ``everysec`` is measured by ``bench.faults``.
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import kill_redis_mid_burst
from tests.reliability.world import Burst, World, burst_specs, judge, wait_settled

pytestmark = pytest.mark.integration

RUNS = 60


def test_no_accepted_run_is_lost_and_everyone_reconnects_after_redis_is_killed(
    world: World,
) -> None:
    outage = kill_redis_mid_burst(world, burst_specs(RUNS, prefix="rk"), kill_after=RUNS // 3)
    burst = outage.burst
    # While Redis was away the API answered 503 (retry later), never another 5xx.
    assert burst.server_errors == []
    assert set(burst.answers) <= {"202", "503"}, burst.answers
    assert outage.accepted_before_kill < len(burst.accepted)

    # The API reconnected by itself: a second burst is accepted whole.
    after = Burst(world.stack, burst_specs(10, prefix="rk-after"), threads=4)
    after.run()
    assert after.answers == {"202": 10}
    with world.stack.client() as http:
        assert http.get("/health").json()["redis"] == "ok"

    accepted = burst.accepted | after.accepted
    # The workers reconnected by themselves: every accepted run moves on.
    wait_settled(world, accepted, timeout=180)
    verdict = judge(world, accepted)
    assert verdict.lost == []
    assert verdict.problems() == [], world.stack.logs()
