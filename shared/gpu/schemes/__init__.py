"""Label schemes that name a node's NVIDIA GPUs when GPU Feature Discovery does not.

Managed clusters run NVIDIA's device plugin (so nodes advertise ``nvidia.com/gpu``)
without GFD, and name the GPU in their own labels. :func:`managed_identity`
reads them in a fixed precedence, most specific first:

1. GKE ``cloud.google.com/gke-accelerator`` (:mod:`.gke`)
2. Karpenter ``karpenter.k8s.aws/instance-gpu-name`` (:mod:`.karpenter`)
3. CoreWeave ``gpu.nvidia.com/class`` (:mod:`.coreweave`)
4. the node's instance type, looked up in a table (:mod:`.instance_types`)

GFD's ``nvidia.com/gpu.product`` beats all of them; :mod:`shared.gpu.labels`
checks it first. A node carrying two schemes that disagree takes the first
silently: this runs on every inventory pass and must stay pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared.gpu.schemes.coreweave import read_coreweave
from shared.gpu.schemes.gke import read_gke
from shared.gpu.schemes.identity import GpuIdentity
from shared.gpu.schemes.instance_types import read_instance_type
from shared.gpu.schemes.karpenter import read_karpenter

__all__ = ["PRECEDENCE", "managed_identity"]

PRECEDENCE: tuple[Callable[[Mapping[str, str]], GpuIdentity | None], ...] = (
    read_gke,
    read_karpenter,
    read_coreweave,
    read_instance_type,
)


def managed_identity(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The first scheme's reading of the node's NVIDIA GPUs, or ``None`` if none names them."""
    for read in PRECEDENCE:
        identity = read(labels)
        if identity is not None:
            return identity
    return None
