"""CoreWeave's GPU class label → :class:`GpuIdentity`.

CoreWeave labels each node with its GPU class in upper snake case, the bus and
memory spelled out: ``H100_NVLINK_80GB``, ``A100_PCIE_40GB``, ``RTX_A6000``,
``Quadro_RTX_5000``, ``GH200_480GB``. The catalogue reads these as it reads GFD
products (``_`` is a separator, ``80GB`` picks the memory variant).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.gpu.schemes.identity import SCHEME_COREWEAVE, GpuIdentity, identify

__all__ = ["COREWEAVE_GPU_CLASS_LABEL", "read_coreweave"]

# https://docs.coreweave.com/docs/platform/instances/gpu-instances (node-type labels)
COREWEAVE_GPU_CLASS_LABEL = "gpu.nvidia.com/class"


def read_coreweave(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The GPU a CoreWeave node's class label names, or ``None``."""
    gpu_class = labels.get(COREWEAVE_GPU_CLASS_LABEL, "").strip()
    return identify(SCHEME_COREWEAVE, gpu_class) if gpu_class else None
