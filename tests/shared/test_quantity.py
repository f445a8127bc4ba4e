"""Kubernetes quantity parsing: exact values, the apimachinery grammar, rounding up."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as client_parse_quantity

from shared.errors import BerthError, ConfigError
from shared.quantity import QuantityError, parse_quantity, quantity_int, quantity_millis

KI = 1024


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Fraction(0)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("500m", Fraction(1, 2)),
        ("100u", Fraction(1, 10_000)),
        ("5n", Fraction(5, 10**9)),
        ("1k", Fraction(1000)),
        ("10M", Fraction(10**7)),
        ("10G", Fraction(10**10)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),  # a bare E is exa, not an exponent
        ("1Ki", Fraction(KI)),
        ("129Mi", Fraction(129 * KI**2)),
        ("64Gi", Fraction(64 * KI**3)),
        ("2Ti", Fraction(2 * KI**4)),
        ("1Pi", Fraction(KI**5)),
        ("1Ei", Fraction(KI**6)),
        ("1.5Gi", Fraction(3 * KI**3, 2)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1e-3", Fraction(1, 1000)),
        ("1.5e+2", Fraction(150)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("+2", Fraction(2)),
        ("-1", Fraction(-1)),
        ("-500m", Fraction(-1, 2)),
        ("0.1", Fraction(1, 10)),
        ("123456789012345678901234567890", Fraction(123456789012345678901234567890)),
        ("0.000000000000000000000000000001Ei", Fraction(KI**6, 10**30)),
    ],
)
def test_quantities_parse_to_exact_values_in_base_units(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "Gi",
        "m",
        ".",
        "1ki",  # binary suffixes are capital-K "Ki" only
        "1KB",
        "1GB",
        "1e",
        "1e1.5",
        "1.5.5",
        "e3",
        "1Gi2",
        "--1",
        "+-1",
        "1_000",
        "0x10",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: Python's int() takes it, Kubernetes does not
        "1e100000",
    ],
)
def test_strings_kubernetes_would_reject_are_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_the_error_names_the_value_and_the_expected_form() -> None:
    with pytest.raises(QuantityError, match=r"'64GB' is not a Kubernetes quantity.*64Gi"):
        parse_quantity("64GB")


def test_quantity_errors_are_berth_config_errors_and_value_errors() -> None:
    assert issubclass(QuantityError, ConfigError)
    assert issubclass(QuantityError, BerthError)
    assert issubclass(QuantityError, ValueError)


def test_numbers_are_taken_at_their_decimal_value() -> None:
    assert parse_quantity(0.1) == Fraction(1, 10)
    assert parse_quantity(3) == Fraction(3)
    assert parse_quantity(Decimal("2.5")) == Fraction(5, 2)
    assert parse_quantity(Fraction(1, 3)) == Fraction(1, 3)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_non_finite_numbers_and_booleans_are_refused(value: float | bool) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("text", "millis"),
    [("1", 1000), ("500m", 500), ("100u", 1), ("1n", 1), ("1.0001", 1001), ("0", 0)],
)
def test_millis_round_up_like_milli_value(text: str, millis: int) -> None:
    assert quantity_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "whole"),
    [("129Mi", 135266304), ("1.5", 2), ("500m", 1), ("1", 1), ("-1.5", -1), ("1e-9", 1)],
)
def test_whole_values_round_up_like_value(text: str, whole: int) -> None:
    assert quantity_int(text) == whole


_SUFFIXES = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(1000),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "Ki": Fraction(KI),
    "Mi": Fraction(KI**2),
    "Gi": Fraction(KI**3),
    "Ti": Fraction(KI**4),
}


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(_SUFFIXES)))
def test_an_integer_with_a_suffix_is_that_integer_times_the_multiplier(
    number: int, suffix: str
) -> None:
    assert parse_quantity(f"{number}{suffix}") == number * _SUFFIXES[suffix]


@st.composite
def _quantity_strings(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "+", "-"]))
    whole = draw(st.integers(min_value=0, max_value=99_999))
    fraction = draw(st.sampled_from(["", ".", ".5", ".25", ".125", ".000001"]))
    tail = draw(
        st.one_of(
            st.sampled_from([*sorted(_SUFFIXES), "n", "u", "T", "P", "E", "Pi"]),
            st.integers(min_value=-12, max_value=12).map(lambda e: f"e{e}"),
            st.integers(min_value=0, max_value=12).map(lambda e: f"E+{e}"),
        )
    )
    return f"{sign}{whole}{fraction}{tail}"


@given(_quantity_strings())
def test_values_agree_with_the_official_clients_parser(text: str) -> None:
    # The kubernetes client computes in Decimal with 28 significant digits; these
    # strings stay inside that (no "Ei" with a fraction), so its answer is exact too.
    assert parse_quantity(text) == Fraction(client_parse_quantity(text))


def test_large_values_stay_exact_where_decimal_arithmetic_rounds() -> None:
    # The official client's Decimal answer for this is off in the 23rd digit.
    exact = Fraction(8674_000001, 10**6) * KI**6
    assert parse_quantity("8674.000001Ei") == exact
    assert Fraction(client_parse_quantity("8674.000001Ei")) != exact
