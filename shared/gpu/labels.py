"""A node's labels and allocatable resources → the GPUs it offers, as plain models.

One node may offer several *groups* of GPUs: under NVIDIA's MIG ``mixed``
strategy every MIG profile is its own extended resource (``nvidia.com/mig-1g.10gb``,
``nvidia.com/mig-3g.40gb``) next to any whole GPUs (``nvidia.com/gpu``). So a
node's GPUs are a list of :class:`GpuGroup`, one per resource name a pod can
request, and ``count`` is always the number of *units of that resource* the
node advertises (MIG slices, time-slicing replicas), because that is what a
pod's request is counted against.

Label schemes handled (each key below names its source):

* NVIDIA GPU Feature Discovery / GPU Operator: ``.replicas``, ``.sharing-strategy``,
  ``nvidia.com/mig.strategy`` and the per-profile ``nvidia.com/mig-<p>.count`` /
  ``.memory`` labels of the mixed strategy.
* AMD node labeller: ``amd.com/gpu.product-name``, ``.device-id``, ``.vram``
  (whole GiB with a ``G``), and the older ``beta.amd.com/gpu.device-id.<id>: "<n>"``
  key-encoded form, which dstack relies on because it is the most widely deployed.
* Intel Gaudi: only the ``habana.ai/gaudi`` resource; the Habana device plugin
  sets no product label, so the model defaults to Gaudi2.
* NVIDIA GPUs are named by :mod:`shared.gpu.schemes`: GFD's product label first,
  then GKE, Karpenter on EKS, CoreWeave and the cloud instance type. Every scheme
  yields a :class:`~shared.gpu.schemes.identity.GpuIdentity`, and the groups are
  built from it here, so ``count`` means the same whichever scheme named the GPU,
  and each group records the scheme in ``GpuGroup.scheme``.

A node whose labels name a GPU but whose allocatable lacks the resource (the
device plugin is down or still starting) keeps its group with ``count=0``, so an
operator can see the GPUs exist but are not offered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from shared.gpu.catalogue import (
    GpuModel,
    GpuVendor,
    lookup_amd_device_id,
    lookup_product,
    parse_mig_profile,
)
from shared.gpu.schemes import nvidia_identity
from shared.gpu.schemes.identity import (
    SCHEME_AMD,
    SCHEME_DEVICE_PLUGIN,
    SCHEME_GAUDI,
    SCHEME_GFD,
    GpuIdentity,
    positive_int,
)
from shared.quantity import QuantityError, quantity_int

__all__ = [
    "AMD_GPU_RESOURCE",
    "GPU_TAINT_KEYS",
    "INTEL_GAUDI_RESOURCE",
    "NVIDIA_GPU_RESOURCE",
    "NVIDIA_GPU_SHARED_RESOURCE",
    "NVIDIA_MIG_RESOURCE_PREFIX",
    "GpuGroup",
    "NodeGpus",
    "is_gpu_resource",
    "node_gpus",
]

# Extended resources the device plugins advertise and pods request.
# https://github.com/NVIDIA/k8s-device-plugin#shared-access-to-gpus (gpu.shared
# is the time-slicing resource when renameByDefault is on).
NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
NVIDIA_GPU_SHARED_RESOURCE = "nvidia.com/gpu.shared"
NVIDIA_MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# https://github.com/ROCm/k8s-device-plugin
AMD_GPU_RESOURCE = "amd.com/gpu"
# https://github.com/HabanaAI/habanalabs-k8s-device-plugin
INTEL_GAUDI_RESOURCE = "habana.ai/gaudi"

# Taints GPU node pools commonly carry (GKE, AKS, EKS add-ons) under the resource
# name; Berth's GPU pods tolerate them, so they do not make a node unschedulable.
GPU_TAINT_KEYS = frozenset({NVIDIA_GPU_RESOURCE, AMD_GPU_RESOURCE, INTEL_GAUDI_RESOURCE})

# NVIDIA GPU Feature Discovery labels:
# https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md
NVIDIA_PRODUCT_LABEL = "nvidia.com/gpu.product"
NVIDIA_COUNT_LABEL = "nvidia.com/gpu.count"
NVIDIA_MEMORY_LABEL = "nvidia.com/gpu.memory"
NVIDIA_REPLICAS_LABEL = "nvidia.com/gpu.replicas"
NVIDIA_SHARING_STRATEGY_LABEL = "nvidia.com/gpu.sharing-strategy"
NVIDIA_PRESENT_LABEL = "nvidia.com/gpu.present"
NVIDIA_MIG_STRATEGY_LABEL = "nvidia.com/mig.strategy"

# AMD node labeller labels (current and "beta." forms):
# https://github.com/ROCm/k8s-device-plugin/tree/master/cmd/k8s-node-labeller
AMD_PRODUCT_LABELS = ("amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")
AMD_DEVICE_ID_LABELS = ("amd.com/gpu.device-id", "beta.amd.com/gpu.device-id")
AMD_VRAM_LABELS = ("amd.com/gpu.vram", "beta.amd.com/gpu.vram")


class GpuGroup(BaseModel):
    """GPUs of one kind on one node, requested through one resource name."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    vendor: GpuVendor
    resource: str
    """Extended resource a pod requests: nvidia.com/gpu, nvidia.com/mig-1g.10gb, amd.com/gpu."""
    count: int
    """Units of ``resource`` the node advertises as allocatable (0 if the plugin is not up)."""
    product: str | None = None
    """The raw product label (or AMD device id), kept verbatim for reports."""
    name: str | None = None
    """Canonical short name (H100, MI300X, Gaudi2); ``None`` when the catalogue does not know it."""
    known: bool = False
    memory_mib: int | None = None
    """Memory of one unit in MiB: the MIG slice, or the whole (possibly shared) GPU."""
    mig_profile: str | None = None
    shared: bool = False
    """Time-sliced or MPS: several units share one physical GPU and its memory."""
    replicas: int = 1
    """Units per physical GPU when shared; 1 otherwise."""
    scheme: str = ""
    """Which labels named the GPU: gfd, gke, karpenter, coreweave, instance-type, amd,
    gaudi, or device-plugin when none did. A plain ``str``, not an enum, so an older
    reader survives a newer writer's scheme."""

    @model_validator(mode="before")
    @classmethod
    def _scheme_from_vendor(cls, data: Any) -> Any:
        # Inventories stored before ``scheme`` existed were built only from GFD,
        # the AMD labeller or the Gaudi plugin, so the vendor says which.
        if isinstance(data, dict) and "scheme" not in data:
            return {**data, "scheme": _LEGACY_SCHEMES.get(str(data.get("vendor")), "")}
        return data

    @property
    def devices(self) -> int:
        """Physical GPUs (or MIG slices) behind the advertised units."""
        return self.count // self.replicas if self.replicas > 0 else self.count


class NodeGpus(BaseModel):
    """All GPU groups of one node; empty when the node has no accelerators."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    groups: tuple[GpuGroup, ...] = ()

    @property
    def vendor(self) -> GpuVendor:
        return self.groups[0].vendor if self.groups else GpuVendor.NONE

    @property
    def count(self) -> int:
        return sum(group.count for group in self.groups)


def is_gpu_resource(resource: str) -> bool:
    """True for the extended resources that are accelerators (and are tracked as such)."""
    return resource in _GPU_RESOURCES or resource.startswith(NVIDIA_MIG_RESOURCE_PREFIX)


def node_gpus(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> NodeGpus:
    """Read a node's GPU groups from its labels and ``status.allocatable``."""
    groups = [*_nvidia_groups(labels, allocatable), *_amd_groups(labels, allocatable)]
    groups.extend(_gaudi_groups(allocatable))
    return NodeGpus(groups=tuple(groups))


_GPU_RESOURCES = frozenset(
    {NVIDIA_GPU_RESOURCE, NVIDIA_GPU_SHARED_RESOURCE, AMD_GPU_RESOURCE, INTEL_GAUDI_RESOURCE}
)
# Mixed-strategy per-profile label keys, e.g. "nvidia.com/mig-1g.10gb.count".
_MIG_LABEL = re.compile(r"nvidia\.com/mig-(?P<profile>[^/]+?)\.(?P<field>count|memory|replicas)")
_AMD_VRAM = re.compile(r"(\d+)\s*(?:G|Gi|GB|GiB)", re.IGNORECASE)
_DEFAULT_GAUDI = "Gaudi2"
_LEGACY_SCHEMES = {
    GpuVendor.NVIDIA.value: SCHEME_GFD,
    GpuVendor.AMD.value: SCHEME_AMD,
    GpuVendor.INTEL.value: SCHEME_GAUDI,
}


def _nvidia_groups(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> list[GpuGroup]:
    identity = nvidia_identity(labels)
    mig_resources = _mig_resources(labels, allocatable)
    whole = [r for r in (NVIDIA_GPU_RESOURCE, NVIDIA_GPU_SHARED_RESOURCE) if r in allocatable]
    present = labels.get(NVIDIA_PRESENT_LABEL, "").lower() == "true"
    if identity is None and not present and not whole and not mig_resources:
        return []

    mixed = labels.get(NVIDIA_MIG_STRATEGY_LABEL, "").lower() == "mixed"
    groups = [_mig_group(p, r, identity, labels, allocatable) for p, r in mig_resources]

    default_replicas = identity.replicas if identity is not None else 1
    replicas = positive_int(labels.get(NVIDIA_REPLICAS_LABEL)) or default_replicas
    sharing = labels.get(NVIDIA_SHARING_STRATEGY_LABEL, "").lower()
    for resource in whole or [NVIDIA_GPU_RESOURCE]:
        count = _allocatable_count(allocatable, resource)
        # Under "mixed", nvidia.com/gpu counts only GPUs left whole; skip it when
        # every GPU is partitioned rather than report an empty group.
        if mixed and count == 0 and groups:
            continue
        shared = (
            replicas > 1
            or (identity is not None and identity.shared)
            or resource == NVIDIA_GPU_SHARED_RESOURCE
            or sharing in ("time-slicing", "mps")
        )
        groups.append(
            GpuGroup(
                vendor=GpuVendor.NVIDIA,
                resource=resource,
                count=count,
                product=identity.product if identity else None,
                name=identity.name if identity else None,
                known=identity is not None and identity.known,
                memory_mib=identity.memory_mib if identity else None,
                mig_profile=identity.mig_profile if identity else None,
                shared=shared,
                replicas=replicas if shared else 1,
                scheme=identity.scheme if identity else SCHEME_DEVICE_PLUGIN,
            )
        )
    return groups


def _mig_resources(
    labels: Mapping[str, str], allocatable: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(profile, resource) for each mixed-strategy MIG profile, from allocatable or labels."""
    found: dict[str, str] = {}
    for resource in allocatable:
        if resource.startswith(NVIDIA_MIG_RESOURCE_PREFIX):
            profile = resource[len(NVIDIA_MIG_RESOURCE_PREFIX) :].removesuffix(".shared")
            found[profile] = resource
    for key in labels:
        match = _MIG_LABEL.fullmatch(key)
        if match is not None and match["field"] == "count":
            found.setdefault(match["profile"], NVIDIA_MIG_RESOURCE_PREFIX + match["profile"])
    return sorted(found.items())


def _mig_group(
    profile: str,
    resource: str,
    identity: GpuIdentity | None,
    labels: Mapping[str, str],
    allocatable: Mapping[str, str],
) -> GpuGroup:
    mig = parse_mig_profile(profile)
    memory = positive_int(labels.get(f"{NVIDIA_MIG_RESOURCE_PREFIX}{profile}.memory"))
    if memory is None and mig is not None:
        memory = mig.memory_mib
    replicas = positive_int(labels.get(f"{NVIDIA_MIG_RESOURCE_PREFIX}{profile}.replicas")) or 1
    shared = replicas > 1 or resource.endswith(".shared")
    return GpuGroup(
        vendor=GpuVendor.NVIDIA,
        resource=resource,
        count=_allocatable_count(allocatable, resource),
        product=identity.product if identity else None,
        name=identity.name if identity else None,
        known=identity is not None and identity.known,
        memory_mib=memory,
        mig_profile=mig.name if mig is not None else profile,
        shared=shared,
        replicas=replicas if shared else 1,
        scheme=identity.scheme if identity else SCHEME_DEVICE_PLUGIN,
    )


def _amd_groups(labels: Mapping[str, str], allocatable: Mapping[str, str]) -> list[GpuGroup]:
    product = _first_label(labels, AMD_PRODUCT_LABELS)
    device_ids = _amd_device_ids(labels)
    if AMD_GPU_RESOURCE not in allocatable and product is None and not device_ids:
        return []

    model = lookup_product(product) if product is not None else None
    if model is None and device_ids:
        models = [lookup_amd_device_id(i) for i in device_ids]
        names = {m.name for m in models if m is not None}
        # A node mixing two AMD models cannot say which one a pod gets (the
        # plugin advertises one amd.com/gpu pool), so it stays unnamed.
        if None not in models and len(names) == 1:
            model = models[0]
    vram = _amd_vram_mib(labels)
    return [
        GpuGroup(
            vendor=GpuVendor.AMD,
            resource=AMD_GPU_RESOURCE,
            count=_allocatable_count(allocatable, AMD_GPU_RESOURCE),
            product=product if product is not None else (",".join(device_ids) or None),
            name=model.name if model else None,
            known=model is not None,
            memory_mib=vram if vram is not None else _model_memory_mib(model),
            scheme=SCHEME_AMD,
        )
    ]


def _amd_device_ids(labels: Mapping[str, str]) -> list[str]:
    ids = {
        v.strip().lower().removeprefix("0x") for k in AMD_DEVICE_ID_LABELS if (v := labels.get(k))
    }
    for key, value in labels.items():
        for prefix in AMD_DEVICE_ID_LABELS:
            # Key-encoded form: "beta.amd.com/gpu.device-id.74a1": "8" (8 GPUs).
            if key.startswith(prefix + ".") and value != "0":
                ids.add(key[len(prefix) + 1 :].lower())
    return sorted(ids)


def _amd_vram_mib(labels: Mapping[str, str]) -> int | None:
    values = [v for k in AMD_VRAM_LABELS if (v := labels.get(k))]
    values += [k[len(p) + 1 :] for k in labels for p in AMD_VRAM_LABELS if k.startswith(p + ".")]
    for value in values:
        match = _AMD_VRAM.fullmatch(value.strip())
        if match is not None:
            # The labeller rounds VRAM to whole GiB and writes "<n>G".
            return int(match[1]) * 1024
    return None


def _gaudi_groups(allocatable: Mapping[str, str]) -> list[GpuGroup]:
    if INTEL_GAUDI_RESOURCE not in allocatable:
        return []
    model = lookup_product(_DEFAULT_GAUDI)
    return [
        GpuGroup(
            vendor=GpuVendor.INTEL,
            resource=INTEL_GAUDI_RESOURCE,
            count=_allocatable_count(allocatable, INTEL_GAUDI_RESOURCE),
            name=model.name if model else None,
            known=model is not None,
            memory_mib=_model_memory_mib(model),
            scheme=SCHEME_GAUDI,
        )
    ]


def _first_label(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if value := labels.get(key):
            return value
    for key in labels:
        for prefix in keys:
            # Key-encoded form: "beta.amd.com/gpu.product-name.AMD_Instinct_MI300X_OAM": "8".
            if key.startswith(prefix + "."):
                return key[len(prefix) + 1 :]
    return None


def _allocatable_count(allocatable: Mapping[str, str], resource: str) -> int:
    value = allocatable.get(resource)
    if value is None:
        return 0
    try:
        return max(0, quantity_int(value))
    except QuantityError:
        return 0


def _model_memory_mib(model: GpuModel | None) -> int | None:
    return model.memory_gib * 1024 if model is not None else None
