"""What a label scheme says about a node's NVIDIA GPUs, before anything is counted.

Every scheme (GPU Feature Discovery, GKE, Karpenter, CoreWeave, the instance-type
table) reduces to the same :class:`GpuIdentity`: which product, its short name,
the memory of one unit and, for GKE's partitioned GPUs, the MIG profile.
:mod:`shared.gpu.labels` turns one identity plus the node's allocatable into
:class:`~shared.gpu.labels.GpuGroup` values, so every scheme yields the same
groups and the counting rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.gpu.catalogue import derive_name, lookup_product, memory_token_gib

__all__ = [
    "SCHEME_AMD",
    "SCHEME_COREWEAVE",
    "SCHEME_DEVICE_PLUGIN",
    "SCHEME_GAUDI",
    "SCHEME_GFD",
    "SCHEME_GKE",
    "SCHEME_INSTANCE_TYPE",
    "SCHEME_KARPENTER",
    "GpuIdentity",
    "identify",
    "positive_int",
]

SCHEME_GFD = "gfd"
SCHEME_GKE = "gke"
SCHEME_KARPENTER = "karpenter"
SCHEME_COREWEAVE = "coreweave"
SCHEME_INSTANCE_TYPE = "instance-type"
SCHEME_AMD = "amd"
SCHEME_GAUDI = "gaudi"
# The device plugin advertises nvidia.com/gpu but no label names the GPU.
SCHEME_DEVICE_PLUGIN = "device-plugin"


@dataclass(frozen=True)
class GpuIdentity:
    """One scheme's reading of a node's NVIDIA GPUs."""

    scheme: str
    product: str
    """The label value that named the GPU, kept for reports and the nominal-memory lookup."""
    name: str | None
    """Catalogue short name; for the managed schemes a derived one when the catalogue lacks it."""
    known: bool
    memory_mib: int | None
    mig_profile: str | None = None
    shared: bool = False
    replicas: int = 1


def identify(scheme: str, product: str, *, memory_mib: int | None = None) -> GpuIdentity:
    """The identity a managed-cluster label value gives, known to the catalogue or not.

    ``memory_mib`` is a separate memory label (Karpenter's); it wins over the
    catalogue as GFD's ``nvidia.com/gpu.memory`` does. Unknown values keep a name
    derived from the label so that ``gpu: B300`` can still request them.
    """
    model = lookup_product(product)
    if model is not None:
        memory = memory_mib if memory_mib is not None else model.memory_gib * 1024
        return GpuIdentity(scheme, product, model.name, True, memory)
    if memory_mib is None:
        gib = memory_token_gib(product)
        memory_mib = gib * 1024 if gib is not None else None
    return GpuIdentity(scheme, product, derive_name(product), False, memory_mib)


def positive_int(value: str | None) -> int | None:
    """A label's positive integer, or ``None`` for a missing, zero or malformed value."""
    if value is None or not value.strip().isdigit():
        return None
    number = int(value)
    return number if number > 0 else None
