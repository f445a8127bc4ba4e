"""The proxy worker SIGKILLed: a restart takes the lease over once it lapses, the
inventory is fresh again within seconds, and the jump host is left as it was."""

from __future__ import annotations

import pytest

from tests.reliability.faults import kill_proxy_worker
from tests.reliability.world import World
from workers.lease import LEASE_TTL_S

pytestmark = pytest.mark.integration


def test_a_restarted_proxy_worker_takes_over_with_a_fresh_inventory(world: World) -> None:
    takeover = kill_proxy_worker(world, cordon="kwok-h100-0")
    # The dead leader's lease lapses after LEASE_TTL_S; the standby polls every few seconds.
    assert takeover.leader_after_s < LEASE_TTL_S + 10
    # A change made while no one led shows within seconds of the takeover.
    assert takeover.fresh_after_s < takeover.leader_after_s + 20
    # Taking over recreated nothing: the jump host's objects are the same objects.
    assert takeover.jump_uids_before
    assert takeover.jump_uids_after == takeover.jump_uids_before
