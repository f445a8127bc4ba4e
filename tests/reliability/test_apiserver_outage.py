"""kube-apiserver stopped mid-burst and restarted with its recorded argv.

No run fails because of the outage (workers retry, beat re-sends), the API
keeps accepting runs meanwhile, and work resumes within seconds of the return.
The bench holds the outage for 60 s.
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import stop_apiserver_mid_burst
from tests.reliability.world import World, burst_specs, judge, wait_settled

pytestmark = pytest.mark.integration

OUTAGE_S = 15.0  # 60 s in the bench
RESUME_WITHIN_S = 30.0  # retries back off up to this; beat's sweep re-sends every 5 s


def test_an_apiserver_outage_fails_no_run_and_work_resumes_after_it(world: World) -> None:
    specs = burst_specs(40, prefix="ao")
    outage = stop_apiserver_mid_burst(world, specs[:20], specs[20:], outage_s=OUTAGE_S)
    # Accepting a run needs Redis only: the API took every run during the outage.
    assert outage.during.answers == {"202": 20}, outage.during.answers
    assert outage.resumed_s is not None and outage.resumed_s < RESUME_WITHIN_S

    accepted = outage.before.accepted | outage.during.accepted
    wait_settled(world, accepted, timeout=180)
    verdict = judge(world, accepted)
    assert verdict.failed == {}
    assert verdict.problems() == [], world.stack.logs()
