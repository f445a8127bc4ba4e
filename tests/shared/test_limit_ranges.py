"""A LimitRange's Container max and default, judged against a run's container. Pure."""

from __future__ import annotations

from shared.policy.limit_ranges import ContainerLimits, check

GIB = 2**30
RANGE = ContainerLimits(
    name="team-limits",
    max={"cpu": 4000, "memory": 16 * GIB, "nvidia.com/gpu": 2},
    default={"memory": 8 * GIB},
)


def test_a_container_within_max_and_default_passes() -> None:
    requests = {"cpu": 2000, "memory": 4 * GIB, "nvidia.com/gpu": 1}
    assert check((RANGE,), requests=requests, limits_set={"nvidia.com/gpu": 1}) is None


def test_a_request_above_max_is_refused_naming_the_limit_range() -> None:
    refusal = check((RANGE,), requests={"cpu": 8000}, limits_set={})
    assert refusal == (
        "LimitRange team-limits allows at most 4 cpu per container; the run asks for 8"
    )


def test_a_limit_above_max_is_refused_even_when_the_request_fits() -> None:
    refusal = check((RANGE,), requests={"memory": GIB}, limits_set={"memory": 32 * GIB})
    assert refusal is not None and "at most 16Gi memory" in refusal and "32Gi" in refusal


def test_gpus_count_against_max_as_requests_equal_limits() -> None:
    refusal = check((RANGE,), requests={"nvidia.com/gpu": 3}, limits_set={"nvidia.com/gpu": 3})
    assert refusal is not None and "at most 2 nvidia.com/gpu" in refusal


def test_a_request_above_the_default_limit_without_a_limit_of_its_own_is_refused() -> None:
    refusal = check((RANGE,), requests={"memory": 12 * GIB}, limits_set={})
    assert refusal is not None and "a limit of 8Gi, below the run's request of 12Gi" in refusal
    # With an upper bound of its own (``memory: 12GB..14GB``) the default does not apply.
    assert check((RANGE,), requests={"memory": 12 * GIB}, limits_set={"memory": 14 * GIB}) is None


def test_no_limit_range_refuses_nothing() -> None:
    assert check((), requests={"cpu": 10**6}, limits_set={}) is None
