"""dstack's RPS autoscaler rule, as Berth's beat applies it to services with ``scaling``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.services.service_scaling import ScalingRule, desired_replicas

RULE = ScalingRule(
    min_replicas=1, max_replicas=4, target_rps=10, scale_up_delay_s=300, scale_down_delay_s=600
)


def test_the_count_is_requests_per_second_over_the_target_rounded_up() -> None:
    assert desired_replicas(RULE, current=1, rps=25, last_scaled_at=None, now=0) == 3


def test_the_count_stays_within_the_replica_range() -> None:
    assert desired_replicas(RULE, current=2, rps=1000, last_scaled_at=None, now=0) == 4
    assert desired_replicas(RULE, current=2, rps=0, last_scaled_at=None, now=0) == 1


def test_scaling_up_waits_for_scale_up_delay_since_the_last_change() -> None:
    assert desired_replicas(RULE, current=1, rps=25, last_scaled_at=1000, now=1299) == 1
    assert desired_replicas(RULE, current=1, rps=25, last_scaled_at=1000, now=1300) == 3


def test_scaling_down_waits_for_scale_down_delay_since_the_last_change() -> None:
    assert desired_replicas(RULE, current=3, rps=5, last_scaled_at=1000, now=1599) == 3
    assert desired_replicas(RULE, current=3, rps=5, last_scaled_at=1000, now=1600) == 1


def test_from_zero_replicas_a_request_scales_up_at_once() -> None:
    rule = ScalingRule(
        min_replicas=0, max_replicas=2, target_rps=1, scale_up_delay_s=300, scale_down_delay_s=600
    )
    assert desired_replicas(rule, current=0, rps=0.1, last_scaled_at=1000, now=1001) == 1
    assert desired_replicas(rule, current=1, rps=0, last_scaled_at=1000, now=1600) == 0


@given(
    current=st.integers(0, 8),
    rps=st.floats(0, 1e6, allow_nan=False),
    since=st.floats(0, 10_000, allow_nan=False),
)
def test_the_count_never_leaves_the_range_unless_it_was_already_outside(
    current: int, rps: float, since: float
) -> None:
    wanted = desired_replicas(RULE, current=current, rps=rps, last_scaled_at=0, now=since)
    assert RULE.min_replicas <= wanted <= RULE.max_replicas or wanted == current


@pytest.mark.parametrize("window", ["0s", "11m"])
def test_a_window_berth_cannot_count_is_refused_naming_it(window: str) -> None:
    text = (
        "type: service\nport: 80\ncommands: [s]\nreplicas: 1..2\n"
        f"scaling: {{metric: rps, target: 1, window: {window}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    assert caught.value.field == "scaling.window"
