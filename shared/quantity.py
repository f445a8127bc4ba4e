"""Kubernetes resource quantities ("500m", "64Gi", "1e3"), parsed exactly.

The grammar is the apimachinery one (``k8s.io/apimachinery/pkg/api/resource``,
https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)::

    quantity ::= sign? number suffix
    number   ::= digits | digits "." digits? | "." digits
    suffix   ::= binarySI | decimalSI | ("e" | "E") sign? digits
    binarySI ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI::= n | u | m | "" | k | M | G | T | P | E

``n`` and ``u`` are not in the documented grammar but the Go parser accepts
them, and the apiserver emits them (``100u`` CPU), so we do too. A bare ``E``
is exa, while ``E`` followed by digits is an exponent, exactly as in Go.

Values come back as :class:`fractions.Fraction` in base units (cores, bytes,
devices) so that no float or Decimal-context rounding creeps in; the two
rounding helpers round *up*, as ``Quantity.Value()`` and ``MilliValue()`` do.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

from shared.errors import ConfigError

__all__ = ["QuantityError", "parse_quantity", "quantity_int", "quantity_millis"]

# Anchored, no whitespace: the apiserver rejects " 1Gi" and so do we, so a value
# Berth accepts is one Kubernetes would accept too.
_QUANTITY = re.compile(
    r"(?P<sign>[+-])?"
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exp>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)"
)

_BINARY_SI = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# apimachinery caps exponents far below this; the cap here only stops a hostile
# "1e999999999" from allocating a huge integer.
_MAX_EXPONENT = 1000


class QuantityError(ConfigError, ValueError):
    """A string is not a Kubernetes quantity (also a ``ValueError`` for pydantic validators)."""


def parse_quantity(value: str | int | float | Decimal | Fraction) -> Fraction:
    """The exact value of a quantity in base units: ``"500m"`` → 1/2, ``"1Ki"`` → 1024."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is a boolean, not a quantity")
    if isinstance(value, Fraction | int):
        return Fraction(value)
    if isinstance(value, float | Decimal):
        return _from_number(value)
    return _from_text(value)


def quantity_int(value: str | int | float | Decimal | Fraction) -> int:
    """The quantity rounded up to a whole number (bytes, devices), like ``Quantity.Value()``."""
    return math.ceil(parse_quantity(value))


def quantity_millis(value: str | int | float | Decimal | Fraction) -> int:
    """The quantity in thousandths rounded up (CPU millicores), like ``Quantity.MilliValue()``."""
    return math.ceil(parse_quantity(value) * 1000)


def _from_number(value: float | Decimal) -> Fraction:
    if not math.isfinite(value):
        raise QuantityError(f"{value!r} is not a finite number")
    # Through the shortest decimal repr, so 0.1 means one tenth, not the binary
    # float nearest to it.
    return Fraction(Decimal(repr(value)) if isinstance(value, float) else value)


@lru_cache(maxsize=4096)
def _from_text(text: str) -> Fraction:
    # Cached: the proxy worker reads every pod's requests on every event of it, and a
    # cluster's pods ask for a few dozen distinct quantities; a Fraction is immutable.
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity; expected a number with an optional "
            "suffix such as 500m, 2, 1.5, 64Gi, 10G or 1e3"
        )
    try:
        number = Fraction(Decimal(match["number"]))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{text!r} has an unreadable number") from e
    if match["sign"] == "-":
        number = -number
    if match["exp"] is not None:
        exponent = int(match["exp"][1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r} has an exponent beyond ±{_MAX_EXPONENT}")
        return number * Fraction(10) ** exponent
    suffix = match["suffix"] or ""
    if suffix in _BINARY_SI:
        return number * Fraction(1024) ** _BINARY_SI[suffix]
    return number * Fraction(10) ** _DECIMAL_SI.get(suffix, 0)
