"""Karpenter's EC2 GPU labels → :class:`GpuIdentity`.

Karpenter copies EC2's ``DescribeInstanceTypes`` GPU info onto the nodes it
launches: the name in lower case (``l40s``, ``a10g``, ``h100``) and the memory
of one GPU in MiB. The name alone does not say which A100 or V100 it is, so the
product kept is ``<name>-<nominal GB>gb`` (``a100-80gb``): the catalogue, and
so the matcher's nominal-memory lookup, then pick the same variant a GFD
product string would.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.gpu.catalogue import nominal_memory_gib
from shared.gpu.schemes.identity import SCHEME_KARPENTER, GpuIdentity, identify, positive_int

__all__ = ["KARPENTER_GPU_NAME_LABEL", "read_karpenter"]

# https://karpenter.sh/docs/concepts/scheduling/#well-known-labels
KARPENTER_GPU_NAME_LABEL = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL = "karpenter.k8s.aws/instance-gpu-memory"
KARPENTER_GPU_MANUFACTURER_LABEL = "karpenter.k8s.aws/instance-gpu-manufacturer"

_NVIDIA = "nvidia"


def read_karpenter(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The NVIDIA GPU a Karpenter node's labels name, or ``None``."""
    name = labels.get(KARPENTER_GPU_NAME_LABEL, "").strip()
    if not name:
        return None
    # AMD (g4ad) and Habana (dl1) instances carry the same labels; not NVIDIA's.
    manufacturer = labels.get(KARPENTER_GPU_MANUFACTURER_LABEL, _NVIDIA).strip().lower()
    if manufacturer != _NVIDIA:
        return None
    memory = positive_int(labels.get(KARPENTER_GPU_MEMORY_LABEL))
    product = name if memory is None else f"{name}-{nominal_memory_gib(memory)}gb"
    return identify(SCHEME_KARPENTER, product, memory_mib=memory)
