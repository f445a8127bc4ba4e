"""Which accelerator a product string names: canonical short name, vendor and memory.

Product strings come from node labels, and every vendor spells them its own way:

* NVIDIA GPU Feature Discovery writes ``nvidia.com/gpu.product`` as the driver's
  name with spaces turned into dashes: ``NVIDIA-H100-80GB-HBM3``, ``Tesla-T4``,
  ``NVIDIA-GeForce-RTX-4090``, older releases without the ``NVIDIA-`` prefix
  (``A100-SXM4-40GB``). Time-slicing appends ``-SHARED`` and the MIG ``single``
  strategy appends ``-MIG-1g.5gb``.
  https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md
* AMD's node labeller writes ``amd.com/gpu.product-name`` from the marketing name
  with underscores (``AMD_Instinct_MI300X_OAM``) and ``amd.com/gpu.device-id`` as
  the bare PCI device id (``74a1``).
  https://github.com/ROCm/k8s-device-plugin/tree/master/cmd/k8s-node-labeller
* Intel Gaudi cards are named by board (``HL-225``) or generation (``Gaudi2``).

Matching works on tokens, not substrings, so ``L4`` never matches ``L40S`` and
``T4`` never matches an NVIDIA ``T400``: the string is upper-cased, ``_`` and
spaces become ``-``, the sharing and MIG suffixes are cut off, brand words
(NVIDIA, Tesla, GeForce, AMD, Instinct, ...) are dropped, and the leading tokens
are looked up, longest pattern first. Form-factor tokens (SXM4, PCIE, HBM3, OAM)
are ignored; a ``NNGB`` token picks the memory variant when the model has
several (A100 40/80, V100 16/32). Unknown strings give ``None``; callers keep the
node and report the product rather than guessing. :func:`derive_name` is the
best-effort guess for the managed-cluster schemes (``shared.gpu.schemes``), whose
values are short vendor identifiers (``nvidia-b300``, ``Quadro_RTX_5000``) that
reliably carry the model token.

Memory sizes are the nominal sizes in GiB, as dstack's gpuhunt catalogue uses
them (https://github.com/dstackai/gpuhunt, ``_internal/constraints.py``). Where
a model has several sizes the *smallest* is the default, so an unlabelled node
never promises memory it may not have; the GFD memory label, when present, wins.
Measured memory (81559 MiB for an "80GB" H100) maps back to the size vendors sell
through :func:`nominal_memory_gib`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "GpuModel",
    "GpuVendor",
    "MigProfile",
    "ProductName",
    "derive_name",
    "lookup_amd_device_id",
    "lookup_product",
    "memory_token_gib",
    "nominal_memory_gib",
    "parse_mig_profile",
    "split_product",
]


class GpuVendor(StrEnum):
    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"
    NONE = "none"


@dataclass(frozen=True)
class GpuModel:
    """One accelerator model: the short name users write in ``resources.gpu``."""

    name: str
    vendor: GpuVendor
    memory_gib: int


@dataclass(frozen=True)
class MigProfile:
    """A MIG GPU-instance profile such as ``1g.10gb``: compute slices and nominal GB."""

    name: str
    slices: int
    memory_gb: int

    @property
    def memory_mib(self) -> int:
        # MIG names round the slice memory to whole GB (1g.10gb is 9856 MiB on
        # an A100-80GB); this nominal figure is used only when GFD gave none.
        return self.memory_gb * 1024


@dataclass(frozen=True)
class ProductName:
    """A product string split into its model part and the suffixes GFD appends."""

    base: str
    shared: bool
    mig: MigProfile | None


# Placement asks this of every GPU group of every node for every run it places (bench
# scenario 6: 60% of match() at 1,000 nodes); a cluster has a few dozen product labels.
@functools.lru_cache(maxsize=1024)
def lookup_product(product: str) -> GpuModel | None:
    """The model a product label names, or ``None`` when the catalogue does not know it."""
    tokens = _model_tokens(split_product(product).base)
    for length in range(min(len(tokens), _LONGEST_PATTERN), 0, -1):
        entry = _BY_TOKENS.get(tuple(tokens[:length]))
        if entry is not None:
            return _with_memory_hint(entry, tokens[length:])
    return None


def derive_name(product: str) -> str | None:
    """A short name for a product the catalogue does not know: ``nvidia-b300`` → ``B300``.

    The model tokens are those before the first form-factor or memory token, with
    brand and filler words dropped; ``None`` when nothing is left.
    """
    tokens = _model_tokens(split_product(product).base)
    model: list[str] = []
    for token in tokens:
        if _FORM_FACTOR_TOKEN.fullmatch(token) or _MEMORY_TOKEN.fullmatch(token):
            break
        if token not in _FILLER_WORDS:
            model.append(token)
    return "".join(model) or None


def memory_token_gib(product: str) -> int | None:
    """The ``NNGB`` memory a product string spells out (``A100_PCIE_40GB`` → 40), if any."""
    for token in _model_tokens(split_product(product).base):
        match = _MEMORY_TOKEN.fullmatch(token)
        if match is not None and int(match[1]) > 0:
            return int(match[1])
    return None


def nominal_memory_gib(memory_mib: int) -> int:
    """The size a GPU is sold as, from the memory it reports: 81559 MiB → 80, 23034 → 24.

    Drivers report less than the nominal size (ECC and firmware reservations) and
    vendors mix GB and GiB, so the measured GiB are rounded *up* to the nearest
    size GPUs are sold in, unless that is far off, when plain rounding is the
    honest answer for a size no one sells.
    """
    gib = memory_mib / 1024
    for size in _NOMINAL_SIZES_GIB:
        # 1% slack: a card reporting exactly (or a hair over) its size keeps it.
        if size >= gib * 0.99:
            return size if size <= gib * _NOMINAL_MAX_RATIO else round(gib)
    return round(gib)


def lookup_amd_device_id(device_id: str) -> GpuModel | None:
    """The AMD model with this PCI device id (``74a1``, ``0x74A1``), or ``None``."""
    key = device_id.strip().lower().removeprefix("0x")
    name = _AMD_DEVICE_IDS.get(key)
    return None if name is None else _BY_NAME[name].model


def split_product(product: str) -> ProductName:
    """Cut GFD's ``-SHARED`` and ``-MIG-<profile>`` suffixes off a product string."""
    base = product.strip()
    shared = False
    if base.upper().endswith(_SHARED_SUFFIX):
        base, shared = base[: -len(_SHARED_SUFFIX)], True
    mig = None
    match = _MIG_SUFFIX.search(base)
    if match is not None:
        mig = parse_mig_profile(match["profile"])
        base = base[: match.start()]
    return ProductName(base=base, shared=shared, mig=mig)


def parse_mig_profile(text: str) -> MigProfile | None:
    """``1g.10gb`` (also inside ``mig-1g.10gb`` or ``1g.10gb+me``) → a profile, else ``None``."""
    match = _MIG_PROFILE.search(text)
    if match is None:
        return None
    return MigProfile(
        name=match[0].lower(), slices=int(match["slices"]), memory_gb=int(match["gb"])
    )


@dataclass(frozen=True)
class _Entry:
    model: GpuModel
    memory_variants: tuple[int, ...]
    patterns: tuple[tuple[str, ...], ...]


def _model_tokens(base: str) -> list[str]:
    normalised = re.sub(r"[\s_]+", "-", base.strip().upper())
    tokens = [t for t in normalised.split("-") if t]
    while tokens and tokens[0] in _BRAND_WORDS:
        tokens.pop(0)
    return tokens


def _with_memory_hint(entry: _Entry, rest: list[str]) -> GpuModel:
    for token in rest:
        match = _MEMORY_TOKEN.fullmatch(token)
        # A hint that is not one of the model's sizes is something else: the
        # "480GB" in NVIDIA-GH200-480GB is the superchip's CPU+GPU memory.
        if match is not None and int(match[1]) in entry.memory_variants:
            return GpuModel(entry.model.name, entry.model.vendor, int(match[1]))
    return entry.model


def _entry(name: str, vendor: GpuVendor, memory: int | tuple[int, ...], *patterns: str) -> _Entry:
    variants = (memory,) if isinstance(memory, int) else memory
    # Each pattern is a dash-separated token sequence; the name itself always matches.
    token_patterns = {tuple(p.split("-")) for p in (name.upper(), *patterns)}
    return _Entry(
        model=GpuModel(name, vendor, min(variants)),
        memory_variants=variants,
        patterns=tuple(sorted(token_patterns)),
    )


_SHARED_SUFFIX = "-SHARED"
# GFD: "<product>-MIG-<slices>g.<gb>gb"; mig-parted profiles may carry "+me"
# (media extensions), which labels and resource names spell ".me".
_MIG_SUFFIX = re.compile(r"-MIG-(?P<profile>\d+g\.\d+gb(?:[.+]me)?)$", re.IGNORECASE)
_MIG_PROFILE = re.compile(r"(?P<slices>\d+)g\.(?P<gb>\d+)gb(?:[.+]me)?", re.IGNORECASE)
_MEMORY_TOKEN = re.compile(r"(\d+)GB?")
# Tokens that end the model part of a name: buses, memory kinds, CoreWeave's NVLINK.
_FORM_FACTOR_TOKEN = re.compile(r"SXM\d*|PCIE|NVLINK|HBM\d*E?|OAM|MEGA")
_FILLER_WORDS = frozenset({"GENERATION", "EDITION", "SERVER"})
# Sizes GPUs are sold in (GB as on the datasheet); 94 is H100 NVL, 141 H200,
# 180 B200, 288 B300/MI355X. A measured size more than 12.5% below the next one
# is not that part (the worst real gap is an L40S: 46068 MiB for 48GB, 6.7%).
_NOMINAL_SIZES_GIB = (
    4,
    6,
    8,
    10,
    11,
    12,
    16,
    20,
    24,
    32,
    40,
    48,
    64,
    80,
    94,
    96,
    128,
    141,
    144,
    180,
    192,
    256,
    288,
)
_NOMINAL_MAX_RATIO = 1.125
_BRAND_WORDS = frozenset(
    {"NVIDIA", "TESLA", "GEFORCE", "QUADRO", "AMD", "INSTINCT", "RADEON", "INTEL", "HABANA"}
)

_N, _A, _I = GpuVendor.NVIDIA, GpuVendor.AMD, GpuVendor.INTEL
_ENTRIES: tuple[_Entry, ...] = (
    # NVIDIA data centre. GFD names as seen on GKE/EKS/AKS nodes and in the GFD
    # and GPU Operator docs: NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-40GB, ...
    _entry("B200", _N, 180),
    _entry("H200", _N, 141),
    _entry("GH200", _N, (96, 144)),
    _entry("H100NVL", _N, 94, "H100-NVL"),
    _entry("H100", _N, 80),
    # China-market export variants of H100 and A100: "NVIDIA-H800", "NVIDIA-A800-SXM4-80GB".
    _entry("H800", _N, 80),
    _entry("A100", _N, (40, 80)),
    _entry("A800", _N, (40, 80)),
    _entry("A40", _N, 48),
    _entry("A30", _N, 24),
    _entry("A16", _N, 16),
    _entry("A10G", _N, 24),
    _entry("A10", _N, 24),
    _entry("L40S", _N, 48),
    _entry("L40", _N, 48),
    _entry("L4", _N, 24),
    _entry("T4", _N, 16),
    _entry("V100", _N, (16, 32)),
    _entry("P100", _N, (12, 16)),
    _entry("P40", _N, 24),
    _entry("P4", _N, 8),
    # NVIDIA workstation and consumer: "NVIDIA-RTX-A6000", "NVIDIA-GeForce-RTX-4090",
    # "NVIDIA-RTX-6000-Ada-Generation", "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition".
    _entry("RTXPRO6000", _N, 96, "RTX-PRO-6000"),
    _entry("RTX6000Ada", _N, 48, "RTX-6000-ADA"),
    _entry("RTX6000", _N, 24, "RTX-6000"),
    # "NVIDIA-RTX-4000-Ada-Generation", "NVIDIA-RTX-4000-SFF-Ada-Generation": both 20 GB.
    _entry("RTX4000Ada", _N, 20, "RTX-4000-ADA", "RTX-4000-SFF-ADA"),
    _entry("A6000", _N, 48, "RTX-A6000"),
    _entry("A5000", _N, 24, "RTX-A5000"),
    _entry("A4000", _N, 16, "RTX-A4000"),
    _entry("RTX5090", _N, 32, "RTX-5090"),
    _entry("RTX4090", _N, 24, "RTX-4090"),
    _entry("RTX3090", _N, 24, "RTX-3090"),
    # AMD Instinct: "AMD_Instinct_MI300X_OAM", "AMD Instinct MI210". MI250 and
    # MI250X are two dies (GCDs) per package and the AMD device plugin counts
    # each die as one amd.com/gpu, so the memory here is per die (64 of 128 GB).
    _entry("MI355X", _A, 288),
    _entry("MI350X", _A, 288),
    _entry("MI325X", _A, 256),
    _entry("MI300X", _A, 192),
    _entry("MI300A", _A, 128),
    _entry("MI250X", _A, 64),
    _entry("MI250", _A, 64),
    _entry("MI210", _A, 64),
    _entry("MI100", _A, 32),
    # Intel Gaudi, by generation or board name (HL-205, HL-225, HL-325L).
    _entry("Gaudi3", _I, 128, "HL-325", "HL-325L"),
    _entry("Gaudi2", _I, 96, "HL-225", "HL-225H"),
    _entry("Gaudi", _I, 32, "HL-205"),
)

# PCI device ids (vendor 0x1002) as in the PCI ID repository,
# https://pci-ids.ucw.cz/read/PC/1002, and the device list of the ROCm GPU
# operator's NFD rule. VF and HF ids are SR-IOV and high-frequency variants of
# the same part. 740c is listed as "MI250X / MI250"; deployed MI250X systems
# (LUMI, Frontier) report it, and both have the same memory per die.
_AMD_DEVICE_IDS: dict[str, str] = {
    "738c": "MI100",
    "738e": "MI100",
    "7408": "MI250X",
    "740c": "MI250X",
    "740f": "MI210",
    "7410": "MI210",
    "74a0": "MI300A",
    "74a1": "MI300X",
    "74a9": "MI300X",
    "74b5": "MI300X",
    "74bd": "MI300X",
    "74a5": "MI325X",
    "74b9": "MI325X",
    "75a0": "MI350X",
    "75a3": "MI355X",
}

_BY_NAME: dict[str, _Entry] = {e.model.name: e for e in _ENTRIES}
_BY_TOKENS: dict[tuple[str, ...], _Entry] = {
    pattern: entry for entry in _ENTRIES for pattern in entry.patterns
}
_LONGEST_PATTERN = max(len(p) for p in _BY_TOKENS)
