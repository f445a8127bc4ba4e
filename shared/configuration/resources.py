"""CPU, GPU and disk specs and ``resources`` as a whole, in dstack's grammar.

Built from :mod:`shared.configuration.ranges`. Every spec prints back (``str``) as a
dstack string that parses to an equal value, so a parsed configuration can be shown
to the user in their own grammar. The ``parse_*`` functions raise ``ValueError``
with a message that quotes the input and names the accepted forms; the models call
them for shorthand input.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BeforeValidator

from shared.configuration.base import BerthModel
from shared.configuration.ranges import (
    COUNT_EXPECTED,
    MEMORY_RANGE_EXPECTED,
    CountRange,
    Memory,
    MemoryRange,
    Range,
    parse_count,
    parse_memory_range,
    split_range,
)

GpuVendor = Literal["nvidia", "amd", "google", "intel", "tenstorrent"]
CpuArch = Literal["x86", "arm"]

GPU_EXPECTED = "expected NAME[:MEMORY][:COUNT] such as A100:80GB:2, H100,A100:8, 24GB.. or nvidia:2"
CPU_EXPECTED = "expected [ARCH:]COUNT such as 4, 4.., ..8, 2..16 or x86:4.. (ARCH is x86 or arm)"


def parse_cpu_spec(value: str | int) -> CPUSpec:
    """``4``, ``4..``, ``..8``, ``2..16``, ``x86:4..``, ``arm`` (count keeps its default)."""
    text = _shorthand_text(value, expected=CPU_EXPECTED)
    arch: CpuArch | None = None
    count: Range[int] | None = None
    for token in text.split(":"):
        if token.lower() in _CPU_ARCH_ALIASES and arch is None:
            arch = _CPU_ARCH_ALIASES[token.lower()]
        elif count is None and token and not token[0].isalpha():
            try:
                low, high = split_range(token, parse_count, expected=CPU_EXPECTED)
            except ValueError as e:
                raise ValueError(f"cannot parse {text!r}: {e}") from None
            count = Range[int](min=low, max=high)
        else:
            raise ValueError(f"cannot parse {text!r}: {CPU_EXPECTED}")
    return CPUSpec(arch=arch, count=count or DEFAULT_CPU_COUNT)


def parse_gpu_spec(value: str | int) -> GPUSpec:
    """dstack's ``gpu`` shorthand: colon-separated vendor, names, memory and count, any order.

    A token that is a vendor (``nvidia``, ``amd``, ``google``/``tpu``, ``intel``,
    ``tenstorrent``/``tt``) sets the vendor; one starting with a letter is a name or a
    comma-separated list of alternatives; one holding a unit is per-GPU memory; the rest
    is the count. The count defaults to exactly one GPU ("``A100`` means one A100").
    """
    text = _shorthand_text(value, expected=GPU_EXPECTED)
    fields: dict[str, Any] = {}
    for token in text.split(":"):
        kind, parsed = _classify_gpu_token(token, text)
        if kind in fields:
            raise ValueError(
                f"cannot parse {text!r}: {GPU_EXPECTED} ({token!r} repeats the {kind})"
            )
        fields[kind] = parsed
    return GPUSpec(**fields)


DEFAULT_CPU_COUNT = Range[int](min=2)
"""dstack's default: at least 2 cores."""
DEFAULT_MEMORY = Range[Memory](min=Memory(8))
"""dstack's default: at least 8GB of RAM."""
DEFAULT_DISK_SIZE = Range[Memory](min=Memory(100))
"""dstack's default: at least 100GB of disk."""
ONE_GPU = Range[int](min=1, max=1)
"""The GPU count when a ``gpu`` spec names no count: dstack documents ``A100`` as one A100."""


class CPUSpec(BerthModel):
    """CPU architecture (any when unset) and core count."""

    arch: CpuArch | None = None
    count: CountRange = DEFAULT_CPU_COUNT

    def __str__(self) -> str:
        return f"{self.arch}:{self.count}" if self.arch else str(self.count)


class GPUSpec(BerthModel):
    """GPU vendor, acceptable model names, per-GPU memory, count and total memory.

    Names keep the case the user wrote; compare them case-insensitively.
    ``total_memory`` has no shorthand, so a spec that sets it prints with a
    ``(total ...)`` suffix that is for reading, not for parsing back.
    """

    dstack_only_fields = frozenset({"compute_capability"})

    # Lambdas because the helpers live below the public classes.
    vendor: Annotated[GpuVendor | None, BeforeValidator(lambda v: _vendor_from_yaml(v))] = None
    name: Annotated[list[str] | None, BeforeValidator(lambda v: _names_from_yaml(v))] = None
    memory: MemoryRange | None = None
    count: CountRange = ONE_GPU
    total_memory: MemoryRange | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.vendor, ",".join(self.name or [])) if p]
        if self.memory is not None:
            parts.append(str(self.memory))
        if self.count != ONE_GPU or not parts:
            parts.append(str(self.count))
        text = ":".join(parts)
        return f"{text} (total {self.total_memory})" if self.total_memory else text


class DiskSpec(BerthModel):
    size: MemoryRange = DEFAULT_DISK_SIZE

    def __str__(self) -> str:
        return str(self.size)


def _cpu_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_cpu_spec(value)
    # dstack also takes a bare {min, max} mapping as the core count.
    if isinstance(value, dict) and value and set(value) <= {"min", "max"}:
        return {"count": value}
    return value


def _gpu_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_gpu_spec(value)
    return value


def _disk_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return DiskSpec(size=parse_memory_range(value))
    return value


class ResourcesSpec(BerthModel):
    """What one node (or replica) of a run needs; defaults are dstack's."""

    cpu: Annotated[CPUSpec, BeforeValidator(_cpu_from_yaml)] = CPUSpec()
    memory: MemoryRange = DEFAULT_MEMORY
    gpu: Annotated[GPUSpec | None, BeforeValidator(_gpu_from_yaml)] = None
    disk: Annotated[DiskSpec, BeforeValidator(_disk_from_yaml)] = DiskSpec()
    shm_size: Memory | None = None

    def __str__(self) -> str:
        parts = [f"cpu={self.cpu}", f"memory={self.memory}", f"disk={self.disk}"]
        if self.gpu is not None:
            parts.append(f"gpu={self.gpu}")
        if self.shm_size is not None:
            parts.append(f"shm_size={self.shm_size}")
        return " ".join(parts)


_CPU_ARCH_ALIASES: dict[str, CpuArch] = {
    "x86": "x86",
    "x86_64": "x86",
    "amd64": "x86",
    "arm": "arm",
    "arm64": "arm",
    "aarch64": "arm",
}
_GPU_VENDOR_ALIASES: dict[str, GpuVendor] = {
    "nvidia": "nvidia",
    "amd": "amd",
    "google": "google",
    "tpu": "google",
    "intel": "intel",
    "tenstorrent": "tenstorrent",
    "tt": "tenstorrent",
}


def _shorthand_text(value: str | int, *, expected: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"cannot parse {value!r}: {expected}")
    return str(value).replace(" ", "")


def _classify_gpu_token(token: str, text: str) -> tuple[str, object]:
    if not token:
        raise ValueError(f"cannot parse {text!r}: {GPU_EXPECTED} (empty part between colons)")
    vendor = _GPU_VENDOR_ALIASES.get(token.lower())
    if vendor is not None:
        return "vendor", vendor
    try:
        if token[0].isalpha():
            return "name", _names_from_yaml(token)
        if any(c.isalpha() for c in token):
            low, high = split_range(token, Memory.parse, expected=MEMORY_RANGE_EXPECTED)
            return "memory", Range[Memory](min=low, max=high)
        count_low, count_high = split_range(token, parse_count, expected=COUNT_EXPECTED)
        return "count", Range[int](min=count_low, max=count_high)
    except ValueError as e:
        raise ValueError(f"cannot parse {text!r}: {GPU_EXPECTED} ({token!r}: {e})") from None


def _names_from_yaml(value: Any) -> Any:
    names = value.split(",") if isinstance(value, str) else value
    if isinstance(names, list) and any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError(f"GPU names must be non-empty words such as A100 or H100, got {value!r}")
    if isinstance(names, list) and not names:
        raise ValueError("GPU name list is empty; omit `name` to accept any GPU")
    return [cast(str, n).strip() for n in names] if isinstance(names, list) else names


def _vendor_from_yaml(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in _GPU_VENDOR_ALIASES:
        return _GPU_VENDOR_ALIASES[value.lower()]
    return value
