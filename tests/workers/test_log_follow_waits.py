"""How long a log follow waits for bytes before it opens again (workers/collector/follow.py).

A kubelet sends a follow's headers with the container's first bytes, so a follow of a
container that has printed nothing cannot be cut when the container ends: it waits out
its timeout. Short first waits let a silent short job's output be marked complete soon
after it ends; they grow, so a long silent job costs few requests.
"""

from __future__ import annotations

from typing import Any, cast

from shared.runlogs.store import LogStore
from shared.settings import LogSettings
from workers.collector.follow import Follower, Target


def _follower(settings: LogSettings) -> Follower:
    target = Target(
        kube=cast(Any, None), namespace="berth", pod="p", uid="u", job_id="j", attempt=1
    )
    return Follower(target, logs=cast(LogStore, None), settings=settings, holder="h")


def test_a_silent_container_is_waited_for_2_s_then_twice_as_long_up_to_the_setting() -> None:
    follower = _follower(LogSettings(follow_quiet_s=20.0))
    waits = []
    for _ in range(7):
        waits.append(follower._quiet_s())
        follower._silent_opens += 1  # as a follow that got no headers counts itself
    assert waits == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]


def test_once_a_container_printed_a_follow_waits_the_whole_setting() -> None:
    follower = _follower(LogSettings(follow_quiet_s=20.0))
    follower._printed = True
    assert follower._quiet_s() == 20.0


def test_a_setting_below_the_first_wait_bounds_it() -> None:
    assert _follower(LogSettings(follow_quiet_s=0.5))._quiet_s() == 0.5
