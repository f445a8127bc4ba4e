"""How many replicas a service with ``scaling`` should have: dstack's RPS autoscaler. Pure.

The same rule as dstack's ``RPSAutoscaler``: ``ceil(rps / target)`` within
``replicas: min..max``; a change waits until ``scale_up_delay`` (up) or
``scale_down_delay`` (down) has passed since the service last scaled, except
from zero replicas, which scales up at once (a request is waiting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingRule:
    min_replicas: int
    max_replicas: int
    target_rps: float
    scale_up_delay_s: int
    scale_down_delay_s: int


def desired_replicas(
    rule: ScalingRule, *, current: int, rps: float, last_scaled_at: float | None, now: float
) -> int:
    """The replica count to move to from ``current`` at ``now``, given the average ``rps``."""
    wanted = min(max(math.ceil(rps / rule.target_rps), rule.min_replicas), rule.max_replicas)
    since = None if last_scaled_at is None else now - last_scaled_at
    if wanted > current:
        if current == 0:
            return wanted
        if since is not None and since < rule.scale_up_delay_s:
            return current
        return wanted
    if wanted < current and since is not None and since < rule.scale_down_delay_s:
        return current
    return wanted
