"""A run's GPU name and memory as node affinity, for when the kube-scheduler places. Pure.

In namespace-only mode (:mod:`shared.policy.access`) Berth cannot read nodes, so it
cannot pick one; it describes the GPU it wants in the labels clusters carry
and lets the kube-scheduler find a node. Node affinity matches label values
exactly, so a name (``H100``) becomes the list of label values each scheme is
known to use for it. The values are the ones :mod:`shared.gpu.catalogue` and
the scheme readers already parse; the scheme's own reader decides which of them
name the GPU and memory asked for, so the two can never disagree.

``nodeSelectorTerms`` are ORed and the requirements inside one term ANDed, so
each scheme gets one term: a node labelled by any scheme that names a wanted
GPU matches. A request with no name and no memory bound gets no affinity at
all; its ``nvidia.com/gpu`` request and the GPU toleration are enough.
AMD and Intel devices have no label scheme here: their resource name alone places them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.gpu.catalogue import lookup_product
from shared.gpu.schemes.coreweave import COREWEAVE_GPU_CLASS_LABEL, read_coreweave
from shared.gpu.schemes.gfd import GFD_PRODUCT_LABEL, read_gfd
from shared.gpu.schemes.gke import GKE_ACCELERATOR_LABEL, read_gke
from shared.gpu.schemes.identity import GpuIdentity
from shared.gpu.schemes.karpenter import KARPENTER_GPU_NAME_LABEL, read_karpenter
from shared.placement.offers import Request

__all__ = ["KNOWN_VALUES", "gpu_node_affinity", "label_values"]

Reader = Callable[[Mapping[str, str]], GpuIdentity | None]

# Label values seen on real nodes, per scheme. Sources: GPU Feature Discovery and
# the GPU Operator docs (nvidia-smi product names with spaces as dashes); GKE's
# "GPU platforms" page; Karpenter's EC2 instance-type reference; CoreWeave's
# "Node types" page. A value missing here is a GPU Berth cannot ask the
# scheduler for by name (it still can by count): add it with its source.
KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    GFD_PRODUCT_LABEL: (
        "NVIDIA-B200",
        "NVIDIA-H200",
        "NVIDIA-GH200-480GB",
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-H100-PCIe",
        "NVIDIA-H100-NVL",
        "NVIDIA-H800",
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-A100-SXM4-80GB",
        "NVIDIA-A100-PCIE-40GB",
        "NVIDIA-A100-80GB-PCIe",
        "NVIDIA-A40",
        "NVIDIA-A30",
        "NVIDIA-A10",
        "NVIDIA-A10G",
        "NVIDIA-L40S",
        "NVIDIA-L40",
        "NVIDIA-L4",
        "Tesla-T4",
        "Tesla-V100-SXM2-16GB",
        "Tesla-V100-SXM2-32GB",
        "Tesla-V100-PCIE-16GB",
        "Tesla-V100-PCIE-32GB",
        "Tesla-P100-PCIE-16GB",
        "Tesla-P4",
        "NVIDIA-RTX-A6000",
        "NVIDIA-RTX-A5000",
        "NVIDIA-RTX-A4000",
        "NVIDIA-RTX-6000-Ada-Generation",
        "NVIDIA-GeForce-RTX-4090",
        "NVIDIA-GeForce-RTX-3090",
    ),
    GKE_ACCELERATOR_LABEL: (
        "nvidia-b200",
        "nvidia-h200-141gb",
        "nvidia-h100-80gb",
        "nvidia-h100-mega-80gb",
        "nvidia-a100-80gb",
        "nvidia-tesla-a100",
        "nvidia-l4",
        "nvidia-tesla-t4",
        "nvidia-tesla-v100",
        "nvidia-tesla-p100",
        "nvidia-tesla-p4",
    ),
    KARPENTER_GPU_NAME_LABEL: ("b200", "h200", "h100", "a100", "a10g", "l40s", "l4", "t4", "v100"),
    COREWEAVE_GPU_CLASS_LABEL: (
        "H200_NVLINK_141GB",
        "H100_NVLINK_80GB",
        "H100_PCIE",
        "A100_NVLINK_80GB",
        "A100_NVLINK",
        "A100_PCIE_80GB",
        "A100_PCIE_40GB",
        "A40",
        "RTX_A6000",
        "RTX_A5000",
        "RTX_A4000",
        "L40S",
        "L40",
        "Tesla_V100_NVLINK",
    ),
}

# In the schemes' documented precedence (shared.gpu.schemes.PRECEDENCE).
_READERS: tuple[tuple[str, Reader], ...] = (
    (GFD_PRODUCT_LABEL, read_gfd),
    (GKE_ACCELERATOR_LABEL, read_gke),
    (KARPENTER_GPU_NAME_LABEL, read_karpenter),
    (COREWEAVE_GPU_CLASS_LABEL, read_coreweave),
)


def gpu_node_affinity(request: Request) -> dict[str, Any] | None:
    """``affinity.nodeAffinity`` that admits only nodes with the GPU ``request`` names.

    None when the request names no GPU model or memory (any GPU will do). A ValueError
    when it does but no known label value matches: the pod could never be placed.
    """
    if not request.gpu_count or (request.gpu_vendor not in (None, "nvidia")):
        return None
    if not request.gpu_names and not (request.gpu_memory_mib_min or request.gpu_memory_mib_max):
        return None
    terms = [
        {"matchExpressions": [{"key": label, "operator": "In", "values": list(values)}]}
        for label, values in label_values(request).items()
    ]
    if not terms:
        raise ValueError(
            "no GPU label value Berth knows names "
            + (", ".join(sorted(n.upper() for n in request.gpu_names)) or "a GPU of that memory")
        )
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def label_values(request: Request) -> dict[str, tuple[str, ...]]:
    """Per label, the known values whose GPU matches the request's names and memory."""
    found: dict[str, tuple[str, ...]] = {}
    for label, read in _READERS:
        values = tuple(v for v in KNOWN_VALUES[label] if _matches(read({label: v}), request))
        if values:
            found[label] = values
    return found


def _matches(identity: GpuIdentity | None, request: Request) -> bool:
    if identity is None:
        return False
    if request.gpu_names:
        names = {n.lower() for n in (identity.name, identity.product) if n}
        if not names & request.gpu_names:
            return False
    memory = _nominal_mib(identity)
    low, high = request.gpu_memory_mib_min, request.gpu_memory_mib_max
    if low is not None and (memory is None or memory < low):
        return False
    return high is None or (memory is not None and memory <= high)


def _nominal_mib(identity: GpuIdentity) -> int | None:
    """As the offers match it (shared.placement.offers.nominal_memory_mib): the catalogue's size."""
    model = lookup_product(identity.product)
    if model is not None and model.memory_gib and identity.mig_profile is None:
        return model.memory_gib * 1024
    return identity.memory_mib
