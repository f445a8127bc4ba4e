"""Ranges and memory sizes, the two building blocks of dstack's ``resources`` grammar.

Canonical memory unit: **GB, binary-based** (1 GB = 1024 MB, 1 TB = 1024 GB), as
dstack counts it, stored as a float number of GB. ``16GB`` is therefore 16 GiB, the
size Kubernetes writes as ``16Gi``; consumers convert with ``gb * 2**30`` bytes.

A :class:`Range` prints (``str``) as the dstack string that parses back to an equal
range: ``2``, ``2..``, ``..8``, ``2..8``, ``16GB..80GB``. The ``parse_*`` functions
raise ``ValueError`` whose message quotes the input and names the accepted forms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from shared.configuration.base import BerthModel

T = TypeVar("T", bound=float)
R = TypeVar("R")

COUNT_EXPECTED = "expected a count or range such as 2, 2.., ..8 or 2..8"
MEMORY_EXPECTED = "expected a size such as 512MB, 16GB or 1TB"
MEMORY_RANGE_EXPECTED = "expected a size or range such as 16GB, 16GB.., ..80GB or 40GB..80GB"


def parse_count_range(value: str | int) -> Range[int]:
    """``2`` → 2..2, ``2..`` → at least 2, ``..8`` → at most 8, ``2..8``."""
    low, high = _with_input(value, split_range, value, parse_count, expected=COUNT_EXPECTED)
    return Range[int](min=low, max=high)


def parse_memory_range(value: str | float) -> Range[Memory]:
    """``16GB`` → exactly 16GB, ``16GB..``, ``..80GB``, ``40GB..80GB``; a bare number is GB."""
    low, high = _with_input(value, split_range, value, Memory.parse, expected=MEMORY_RANGE_EXPECTED)
    return Range[Memory](min=low, max=high)


def split_range(
    value: str | float, parse_bound: Callable[[str], T], *, expected: str
) -> tuple[T | None, T | None]:
    """Split ``a..b``, ``a..``, ``..b`` or ``a`` into checked bounds parsed by ``parse_bound``.

    The ValueError carries ``expected`` (or the ordering problem) without the input,
    so callers can prefix the text as the user wrote it.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(expected)
    text = str(value).replace(" ", "")
    low_text, dots, high_text = text.partition("..")
    if not dots:
        high_text = low_text
    if not low_text and not high_text:
        raise ValueError(f"{expected} (a range needs at least one bound)")
    try:
        low = parse_bound(low_text) if low_text else None
        high = parse_bound(high_text) if high_text else None
    except ValueError:
        raise ValueError(expected) from None
    _check_bounds(low, high)
    return low, high


def parse_count(text: str) -> int:
    """A non-negative whole number written in digits; ValueError otherwise."""
    if _COUNT_RE.fullmatch(text) is None:
        raise ValueError(f"cannot parse {text!r}: expected a whole number such as 8")
    return int(text)


# The models below need these while this module is still being imported.


def format_number(value: float) -> str:
    """The shortest plain decimal that reads back as ``value`` (no exponent, no ``.0``)."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _format_optional(value: float | None) -> str:
    return "" if value is None else _format_bound(value)


def _format_bound(value: float) -> str:
    if isinstance(value, Memory):
        return str(value)
    return str(value) if isinstance(value, int) else format_number(value)


def _check_bounds(low: float | None, high: float | None) -> None:
    shown = f"{_format_optional(low)}..{_format_optional(high)}"
    if low is None and high is None:
        raise ValueError("a range needs at least one bound, got '..'")
    if any(b is not None and b < 0 for b in (low, high)):
        raise ValueError(f"range bounds must not be negative, got {shown}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"a range's min must not exceed its max, got {shown}")


class Memory(float):
    """A memory size in GB (binary: 1 GB = 1024 MB); prints as ``16GB``, ``0.5GB``."""

    @classmethod
    def parse(cls, value: object) -> Memory:
        """``512MB``, ``16GB``, ``1TB`` (any case, spaces ignored) or a number of GB."""
        if isinstance(value, bool):
            raise ValueError(f"cannot parse {value!r}: {MEMORY_EXPECTED}")
        if isinstance(value, int | float):
            return cls._checked(float(value), value)
        if not isinstance(value, str):
            raise ValueError(f"cannot parse {value!r}: {MEMORY_EXPECTED}")
        match = _MEMORY_RE.fullmatch(value.replace(" ", ""))
        if match is None:
            raise ValueError(f"cannot parse {value!r}: {MEMORY_EXPECTED}")
        number, unit = match.groups()
        return cls._checked(float(number) * _GB_PER_UNIT[(unit or "GB").upper()], value)

    @classmethod
    def _checked(cls, gb: float, given: object) -> Memory:
        if not math.isfinite(gb) or gb < 0:
            raise ValueError(f"cannot parse {given!r}: {MEMORY_EXPECTED} (not negative)")
        return cls(gb)

    def __str__(self) -> str:
        return f"{format_number(self)}GB"

    __repr__ = __str__

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(float)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "number"}, {"type": "string"}]}


class Range(BerthModel, Generic[T]):
    """An inclusive range with optional bounds; ``None`` means unbounded on that side.

    Bounds count or measure things, so they are never negative, and ``min <= max``.
    """

    min: T | None = None
    max: T | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_boolean_bounds(cls, data: Any) -> Any:
        # pydantic's lax int takes True as 1; in YAML that is always a mistake.
        if isinstance(data, dict) and any(isinstance(v, bool) for v in data.values()):
            raise ValueError(f"a range bound must be a number, got {data!r}")
        return data

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        _check_bounds(self.min, self.max)
        return self

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies within the range, bounds included."""
        above_min = self.min is None or value >= self.min
        below_max = self.max is None or value <= self.max
        return above_min and below_max

    def __str__(self) -> str:
        if self.min is not None and self.min == self.max:
            return _format_bound(self.min)
        return f"{_format_optional(self.min)}..{_format_optional(self.max)}"


def _count_range_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_count_range(value)
    return value


def _memory_range_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_memory_range(value)
    return value


CountRange = Annotated[Range[int], BeforeValidator(_count_range_from_yaml)]
"""A count or count range written as ``2``, ``2..``, ``..8``, ``2..8`` or {min, max}."""
MemoryRange = Annotated[Range[Memory], BeforeValidator(_memory_range_from_yaml)]
"""A size or size range written as ``16GB``, ``16GB..``, ``..80GB`` or {min, max}."""


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_MEMORY_RE = re.compile(rf"({_NUMBER})((?:[MGT]B)?)", re.IGNORECASE)
_GB_PER_UNIT = {"MB": 1 / 1024, "GB": 1.0, "TB": 1024.0}
_COUNT_RE = re.compile(r"\d+")


def _with_input(given: object, parse: Callable[..., R], *args: Any, expected: str) -> R:
    """Run a grammar helper, prefixing its complaint with the whole input as written."""
    try:
        return parse(*args, expected=expected)
    except ValueError as e:
        raise ValueError(f"cannot parse {given!r}: {e}") from None
