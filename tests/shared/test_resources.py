"""The ``resources`` grammar: every documented dstack form, defaults, and round-trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.configuration.ranges import Memory, Range, parse_count_range, parse_memory_range
from shared.configuration.resources import (
    CPUSpec,
    GPUSpec,
    ResourcesSpec,
    parse_cpu_spec,
    parse_gpu_spec,
)


def _mem(low: float | None, high: float | None) -> Range[Memory]:
    return Range[Memory](min=low, max=high)


def _count(low: int | None, high: int | None) -> Range[int]:
    return Range[int](min=low, max=high)


# --- gpu ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A100", {"name": ["A100"], "count": _count(1, 1)}),
        ("A100:80GB", {"name": ["A100"], "memory": _mem(80, 80)}),
        ("A100:80GB:2", {"name": ["A100"], "memory": _mem(80, 80), "count": _count(2, 2)}),
        ("24GB..", {"memory": _mem(24, None)}),
        ("40GB..80GB", {"memory": _mem(40, 80)}),
        ("..80GB", {"memory": _mem(None, 80)}),
        ("1..8", {"count": _count(1, 8)}),
        ("2", {"count": _count(2, 2)}),
        ("H100,A100:8", {"name": ["H100", "A100"], "count": _count(8, 8)}),
        ("nvidia:2", {"vendor": "nvidia", "count": _count(2, 2)}),
        ("amd:MI300X:8", {"vendor": "amd", "name": ["MI300X"], "count": _count(8, 8)}),
        (
            "A10G,A100:40GB:1..2",
            {"name": ["A10G", "A100"], "memory": _mem(40, 40), "count": _count(1, 2)},
        ),
        ("24GB:1..2", {"memory": _mem(24, 24), "count": _count(1, 2)}),
        ("40GB..80GB:4", {"memory": _mem(40, 80), "count": _count(4, 4)}),
        ("H100:1..2", {"name": ["H100"], "count": _count(1, 2)}),
    ],
)
def test_gpu_shorthand_parses_to_the_spec_dstack_documents(
    text: str, expected: dict[str, Any]
) -> None:
    assert parse_gpu_spec(text) == GPUSpec(**expected)


def test_gpu_shorthand_without_a_count_asks_for_exactly_one_gpu() -> None:
    assert parse_gpu_spec("A100").count == Range[int](min=1, max=1)


def test_gpu_count_given_as_a_yaml_integer_is_a_count() -> None:
    assert ResourcesSpec.model_validate({"gpu": 2}).gpu == GPUSpec(count=_count(2, 2))


@pytest.mark.parametrize(("alias", "vendor"), [("tpu", "google"), ("tt", "tenstorrent")])
def test_gpu_vendor_aliases_map_to_the_vendor(alias: str, vendor: str) -> None:
    assert parse_gpu_spec(f"{alias}:2").vendor == vendor


def test_gpu_memory_units_are_case_insensitive() -> None:
    assert parse_gpu_spec("A100:80gb").memory == _mem(80, 80)


def test_gpu_mapping_form_takes_name_list_memory_count_vendor_and_total_memory() -> None:
    spec = ResourcesSpec.model_validate(
        {
            "gpu": {
                "vendor": "NVIDIA",
                "name": ["H100", "A100"],
                "memory": "40GB..",
                "count": "2..8",
                "total_memory": "160GB..",
            }
        }
    ).gpu
    assert spec == GPUSpec(
        vendor="nvidia",
        name=["H100", "A100"],
        memory=_mem(40, None),
        count=_count(2, 8),
        total_memory=_mem(160, None),
    )


def test_gpu_mapping_form_takes_a_single_name_as_a_string() -> None:
    spec = ResourcesSpec.model_validate({"gpu": {"name": "L4"}}).gpu
    assert spec is not None and spec.name == ["L4"]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("A100:banana", "'banana' repeats the name"),
        ("A100::2", "empty part between colons"),
        ("A100:4x", "'4x': expected a size or range"),
        ("A100:8..2", "min must not exceed its max, got 8..2"),
        ("nvidia:amd", "'amd' repeats the vendor"),
        ("A100,:2", "GPU names must be non-empty"),
    ],
)
def test_bad_gpu_shorthand_quotes_the_input_and_says_what_is_wrong(text: str, detail: str) -> None:
    with pytest.raises(ValueError, match="cannot parse") as caught:
        parse_gpu_spec(text)
    assert detail in str(caught.value)


def test_bad_gpu_shorthand_shows_the_accepted_grammar() -> None:
    with pytest.raises(ValueError) as caught:
        parse_gpu_spec("A100:banana")
    assert str(caught.value).startswith(
        "cannot parse 'A100:banana': expected NAME[:MEMORY][:COUNT] such as A100:80GB:2"
    )


# --- cpu, memory, disk, shm_size ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "arch", "count"),
    [
        ("4", None, _count(4, 4)),
        ("4..", None, _count(4, None)),
        ("..8", None, _count(None, 8)),
        ("2..16", None, _count(2, 16)),
        ("x86:4..", "x86", _count(4, None)),
        ("arm:8", "arm", _count(8, 8)),
        ("arm", "arm", _count(2, None)),
        ("aarch64:2..4", "arm", _count(2, 4)),
    ],
)
def test_cpu_shorthand_sets_arch_and_core_count(
    text: str, arch: str | None, count: Range[int]
) -> None:
    assert parse_cpu_spec(text) == CPUSpec.model_validate({"arch": arch, "count": count})


def test_cpu_as_a_bare_min_max_mapping_is_the_core_count() -> None:
    assert ResourcesSpec.model_validate({"cpu": {"min": 4}}).cpu == CPUSpec(count=_count(4, None))


@pytest.mark.parametrize("text", ["x86:arm", "4:8", "sparc:4", "4x", ""])
def test_bad_cpu_shorthand_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected \[ARCH:\]COUNT"):
        parse_cpu_spec(text)


@pytest.mark.parametrize(
    ("text", "gb"),
    [("512MB", 0.5), ("16GB", 16), ("1TB", 1024), ("1.5TB", 1536), ("8", 8), ("0.25 GB", 0.25)],
)
def test_memory_sizes_are_stored_as_binary_gigabytes(text: str, gb: float) -> None:
    assert Memory.parse(text) == gb


@pytest.mark.parametrize("value", ["16GiB", "16 G", "-1GB", "lots", True, None])
def test_memory_refuses_unknown_units_negative_sizes_and_non_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size such as 512MB, 16GB or 1TB"):
        Memory.parse(value)


def test_memory_prints_without_trailing_zeros() -> None:
    assert [str(Memory(80)), str(Memory(0.5)), str(Memory(1e-05))] == ["80GB", "0.5GB", "0.00001GB"]


def test_resource_fields_accept_exact_values_and_ranges() -> None:
    spec = ResourcesSpec.model_validate(
        {"memory": "..64GB", "disk": "500GB", "shm_size": "16GB", "cpu": 8}
    )
    assert (spec.memory, spec.disk.size, spec.shm_size) == (_mem(None, 64), _mem(500, 500), 16.0)
    assert spec.cpu.count == _count(8, 8)


def test_disk_accepts_a_size_mapping() -> None:
    assert ResourcesSpec.model_validate({"disk": {"size": "100GB.."}}).disk.size == _mem(100, None)


def test_shm_size_is_one_size_not_a_range() -> None:
    with pytest.raises(ValidationError, match="expected a size such as"):
        ResourcesSpec.model_validate({"shm_size": "16GB.."})


def test_defaults_are_dstacks_two_cores_8gb_memory_100gb_disk_and_no_gpu() -> None:
    spec = ResourcesSpec()
    assert str(spec) == "cpu=2.. memory=8GB.. disk=100GB.."
    assert spec.gpu is None


def test_resources_print_compactly_in_dstack_grammar() -> None:
    spec = ResourcesSpec.model_validate({"gpu": "nvidia:A100:80GB:8", "shm_size": "24GB"})
    assert str(spec) == "cpu=2.. memory=8GB.. disk=100GB.. gpu=nvidia:A100:80GB:8 shm_size=24GB"


def test_gpu_with_total_memory_prints_it_as_a_readable_suffix() -> None:
    spec = GPUSpec(name=["A100"], total_memory=_mem(160, None))
    assert str(spec) == "A100 (total 160GB..)"


# --- Range ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("2", 2, 2), ("2..", 2, None), ("..8", None, 8), ("2..8", 2, 8), (" 2 .. 8 ", 2, 8)],
)
def test_count_ranges_parse_exact_open_and_closed_forms(
    text: str, low: int | None, high: int | None
) -> None:
    assert parse_count_range(text) == _count(low, high)


@pytest.mark.parametrize("text", ["..", "", "1..2..3", "a..b", "1.5", "-1"])
def test_malformed_count_ranges_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        parse_count_range(text)


def test_range_mapping_with_min_above_max_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValidationError, match=r"min must not exceed its max, got 8\.\.2"):
        Range[int](min=8, max=2)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({}, "at least one bound"),
        ({"min": -1}, "must not be negative"),
        ({"min": True}, "must be a number"),
        ({"min": 1, "target": 2}, "unknown field"),
    ],
)
def test_range_refuses_empty_negative_boolean_and_unknown_bounds(
    bounds: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Range[int].model_validate(bounds)


counts = st.integers(min_value=0, max_value=10**6)
sizes = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def ordered_bounds(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    low, high = sorted([draw(values), draw(values)])
    shape = draw(st.sampled_from(["closed", "open-max", "open-min", "exact"]))
    if shape == "open-max":
        return low, None
    if shape == "open-min":
        return None, high
    if shape == "exact":
        return low, low
    return low, high


@settings(deadline=None)
@given(ordered_bounds(counts))
def test_any_count_range_prints_as_a_string_that_parses_back_to_it(
    bounds: tuple[int | None, int | None],
) -> None:
    original = _count(*bounds)
    assert parse_count_range(str(original)) == original


@settings(deadline=None)
@given(ordered_bounds(sizes))
def test_any_memory_range_prints_as_a_string_that_parses_back_to_it(
    bounds: tuple[float | None, float | None],
) -> None:
    original = _mem(*bounds)
    assert parse_memory_range(str(original)) == original


@settings(deadline=None)
@given(low=counts, high=counts)
def test_a_range_whose_min_exceeds_its_max_is_always_refused(low: int, high: int) -> None:
    if low <= high:
        assert parse_count_range(f"{low}..{high}") == _count(low, high)
        return
    with pytest.raises(ValueError, match=f"min must not exceed its max, got {low}..{high}"):
        parse_count_range(f"{low}..{high}")


@settings(deadline=None)
@given(bounds=ordered_bounds(counts), value=counts)
def test_a_range_contains_exactly_the_values_between_its_bounds(
    bounds: tuple[int | None, int | None], value: int
) -> None:
    low, high = bounds
    inside = (low is None or value >= low) and (high is None or value <= high)
    assert _count(low, high).contains(value) is inside


gpu_names = st.lists(
    st.from_regex(r"[A-Z][A-Z0-9]{1,6}", fullmatch=True).filter(
        lambda n: n.lower() not in {"tpu", "tt", "amd", "intel", "nvidia", "google"}
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def gpu_specs(draw: st.DrawFn) -> GPUSpec:
    return GPUSpec(
        vendor=draw(st.none() | st.sampled_from(["nvidia", "amd", "google", "intel"])),
        name=draw(st.none() | gpu_names),
        memory=draw(st.none() | ordered_bounds(sizes).map(lambda b: _mem(*b))),
        count=_count(*draw(ordered_bounds(st.integers(0, 64)))),
    )


@settings(deadline=None)
@given(gpu_specs())
def test_any_gpu_spec_prints_as_a_shorthand_that_parses_back_to_it(spec: GPUSpec) -> None:
    assert parse_gpu_spec(str(spec)) == spec


@settings(deadline=None)
@given(arch=st.none() | st.sampled_from(["x86", "arm"]), bounds=ordered_bounds(counts))
def test_any_cpu_spec_prints_as_a_shorthand_that_parses_back_to_it(
    arch: str | None, bounds: tuple[int | None, int | None]
) -> None:
    spec = CPUSpec.model_validate({"arch": arch, "count": _count(*bounds)})
    assert parse_cpu_spec(str(spec)) == spec
