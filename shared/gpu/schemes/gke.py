"""GKE's GPU node labels → :class:`GpuIdentity`.

GKE writes the accelerator type it provisioned, not the driver's product name:
``nvidia-l4``, ``nvidia-tesla-a100``, ``nvidia-a100-80gb``, ``nvidia-h100-mega-80gb``.
The catalogue reads those directly (``nvidia`` and ``tesla`` are brand words).

A partitioned node (``gke-gpu-partition-size: 1g.5gb``) advertises its MIG
slices as plain ``nvidia.com/gpu`` units, which is how GFD's MIG ``single``
strategy models them, so the identity carries the profile and the slice memory
and ``count`` stays the number of slices.

``gke-accelerator-count`` is not read: ``GpuGroup.count`` is what the device
plugin advertises (zero while it starts), and on a partitioned or time-shared
node the label counts physical GPUs, not the units pods request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from shared.gpu.catalogue import parse_mig_profile
from shared.gpu.schemes.identity import SCHEME_GKE, GpuIdentity, identify, positive_int

__all__ = ["GKE_ACCELERATOR_LABEL", "read_gke"]

# https://cloud.google.com/kubernetes-engine/docs/how-to/gpus#multiple_gpus
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# https://cloud.google.com/kubernetes-engine/docs/how-to/gpus-multi
GKE_PARTITION_SIZE_LABEL = "cloud.google.com/gke-gpu-partition-size"
# https://cloud.google.com/kubernetes-engine/docs/how-to/timesharing-gpus
GKE_SHARING_STRATEGY_LABEL = "cloud.google.com/gke-gpu-sharing-strategy"
GKE_MAX_SHARED_CLIENTS_LABEL = "cloud.google.com/gke-max-shared-clients-per-gpu"

_NVIDIA_PREFIX = "nvidia-"
_SHARING_STRATEGIES = frozenset({"time-sharing", "mps"})


def read_gke(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The GPU a GKE node's accelerator labels name, or ``None`` if it has none."""
    accelerator = labels.get(GKE_ACCELERATOR_LABEL, "").strip()
    # Only NVIDIA accelerators use this label today; anything else is not ours to read.
    if not accelerator.lower().startswith(_NVIDIA_PREFIX):
        return None
    identity = identify(SCHEME_GKE, accelerator)
    mig = parse_mig_profile(labels.get(GKE_PARTITION_SIZE_LABEL, ""))
    if mig is not None:
        identity = replace(identity, memory_mib=mig.memory_mib, mig_profile=mig.name)
    strategy = labels.get(GKE_SHARING_STRATEGY_LABEL, "").strip().lower()
    clients = positive_int(labels.get(GKE_MAX_SHARED_CLIENTS_LABEL))
    if strategy in _SHARING_STRATEGIES:
        identity = replace(identity, shared=True, replicas=clients or 1)
    return identity
