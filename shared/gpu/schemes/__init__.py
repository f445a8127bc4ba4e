"""Label schemes that name a node's NVIDIA GPUs, read in one documented precedence.

A node's GPUs are named by whichever of these labels it carries, most exact first:

1. GPU Feature Discovery ``nvidia.com/gpu.product`` (:mod:`.gfd`): the driver's
   own product name and measured memory; the GPU Operator's scheme.
2. GKE ``cloud.google.com/gke-accelerator`` (:mod:`.gke`)
3. Karpenter on EKS ``karpenter.k8s.aws/instance-gpu-name`` (:mod:`.karpenter`)
4. CoreWeave ``gpu.nvidia.com/class`` (:mod:`.coreweave`)
5. the node's instance type, looked up in a table with sources (:mod:`.instance_types`)

The first scheme that names a GPU wins. When a later one names a *different*
GPU (a node relabelled by hand, or a stale label after a node pool change) the
disagreement is logged once per distinct pair of values, not on every pass.
AMD's labeller and the Gaudi plugin name other vendors' devices and are read in
:mod:`shared.gpu.labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared.gpu.schemes.coreweave import read_coreweave
from shared.gpu.schemes.gfd import read_gfd
from shared.gpu.schemes.gke import read_gke
from shared.gpu.schemes.identity import GpuIdentity
from shared.gpu.schemes.instance_types import read_instance_type
from shared.gpu.schemes.karpenter import read_karpenter
from shared.gpu.schemes.notices import warn_once

__all__ = ["PRECEDENCE", "nvidia_identity"]

PRECEDENCE: tuple[Callable[[Mapping[str, str]], GpuIdentity | None], ...] = (
    read_gfd,
    read_gke,
    read_karpenter,
    read_coreweave,
    read_instance_type,
)


def nvidia_identity(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The first scheme's reading of the node's NVIDIA GPUs, or ``None`` if none names them."""
    found = [identity for read in PRECEDENCE if (identity := read(labels)) is not None]
    if not found:
        return None
    winner = found[0]
    for other in found[1:]:
        if _same_gpu(winner, other):
            continue
        warn_once(
            f"conflict:{winner.scheme}={winner.product}:{other.scheme}={other.product}",
            "GPU labels disagree: %s says %r (%s), %s says %r (%s); %s wins by precedence",
            winner.scheme,
            winner.product,
            winner.name or "unnamed",
            other.scheme,
            other.product,
            other.name or "unnamed",
            winner.scheme,
        )
    return winner


def _same_gpu(a: GpuIdentity, b: GpuIdentity) -> bool:
    # Schemes spell one GPU differently (NVIDIA-L4, nvidia-l4, g6.xlarge); the short
    # name is what they must agree on. A scheme that cannot name it does not disagree.
    if a.name is None or b.name is None:
        return True
    return a.name.upper() == b.name.upper()
