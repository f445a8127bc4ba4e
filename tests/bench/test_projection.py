"""The arithmetic of bench/projection.py: the fitted lines the projection reads."""

from __future__ import annotations

import math

import pytest

from bench.projection import exponent, fit


def test_fit_recovers_the_line_its_points_lie_on() -> None:
    slope, intercept = fit([(1_000, 0.5 + 3e-5 * 1_000), (10_000, 0.5 + 3e-5 * 10_000)])
    assert slope == pytest.approx(3e-5)
    assert intercept == pytest.approx(0.5)


def test_fit_of_one_point_or_one_size_is_not_a_number() -> None:
    assert all(math.isnan(v) for v in fit([(10, 1.0)]))
    assert all(math.isnan(v) for v in fit([(10, 1.0), (10, 2.0)]))


def test_exponent_is_one_for_a_cost_linear_in_nodes_and_two_for_a_square() -> None:
    assert exponent([(n, 2e-6 * n) for n in (100, 1_000, 10_000)]) == pytest.approx(1.0)
    assert exponent([(n, 1e-9 * n * n) for n in (100, 1_000, 10_000)]) == pytest.approx(2.0)
