"""Cloud instance type → the NVIDIA GPUs it has: the last resort when no label names them.

Only whole-GPU instance types are listed, and only sizes whose GPU count is
documented; fractional-GPU sizes (Azure NVadsA10 v5 below 36 vCPUs) and
anything not listed give ``None`` rather than a guess. Keys are compared
case-insensitively because AKS and the older beta label differ in case.

Sources:

* AWS accelerated computing instances:
  https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html
* Google Cloud GPU machine types:
  https://cloud.google.com/compute/docs/gpus and
  https://cloud.google.com/compute/docs/accelerator-optimized-machines
* Azure GPU VM sizes:
  https://learn.microsoft.com/azure/virtual-machines/sizes/overview#gpu-accelerated
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.gpu.catalogue import lookup_product
from shared.gpu.schemes.identity import SCHEME_INSTANCE_TYPE, GpuIdentity

__all__ = ["INSTANCE_TYPE_LABELS", "InstanceGpus", "instance_gpus", "read_instance_type"]

# https://kubernetes.io/docs/reference/labels-annotations-taints/#nodekubernetesioinstance-type
# (the beta.kubernetes.io form is deprecated but still set by older node images).
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")


@dataclass(frozen=True)
class InstanceGpus:
    name: str
    memory_gib: int
    count: int


def read_instance_type(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The GPUs the node's instance type is documented to have, or ``None``."""
    for key in INSTANCE_TYPE_LABELS:
        instance_type = labels.get(key, "").strip()
        gpus = instance_gpus(instance_type)
        if gpus is not None:
            known = lookup_product(gpus.name) is not None
            return GpuIdentity(
                SCHEME_INSTANCE_TYPE, instance_type, gpus.name, known, gpus.memory_gib * 1024
            )
    return None


def instance_gpus(instance_type: str) -> InstanceGpus | None:
    """The GPU model, memory and count of a cloud instance type, if it is listed."""
    return _TABLE.get(instance_type.strip().lower())


def _sizes(
    family: str, name: str, memory_gib: int, counts: Mapping[str, int]
) -> dict[str, InstanceGpus]:
    return {
        f"{family}{size}".lower(): InstanceGpus(name, memory_gib, n) for size, n in counts.items()
    }


# AWS G-family sizes: one GPU up to 16xlarge, four at 12xlarge and 24xlarge, eight at 48xlarge.
_AWS_G = {".xlarge": 1, ".2xlarge": 1, ".4xlarge": 1, ".8xlarge": 1, ".16xlarge": 1,
          ".12xlarge": 4, ".24xlarge": 4, ".48xlarge": 8}  # fmt: skip

# g4dn has no 24xlarge or 48xlarge; its eight-GPU size is the metal one.
_AWS_G4DN = {".xlarge": 1, ".2xlarge": 1, ".4xlarge": 1, ".8xlarge": 1, ".16xlarge": 1,
             ".12xlarge": 4, ".metal": 8}  # fmt: skip

_TABLE: dict[str, InstanceGpus] = {
    # AWS
    **_sizes("p4d", "A100", 40, {".24xlarge": 8}),
    **_sizes("p4de", "A100", 80, {".24xlarge": 8}),
    **_sizes("p5", "H100", 80, {".48xlarge": 8}),
    **_sizes("p5e", "H200", 141, {".48xlarge": 8}),
    **_sizes("p3", "V100", 16, {".2xlarge": 1, ".8xlarge": 4, ".16xlarge": 8}),
    **_sizes("p3dn", "V100", 32, {".24xlarge": 8}),
    **_sizes("g5", "A10G", 24, _AWS_G),
    **_sizes("g6", "L4", 24, _AWS_G),
    **_sizes("g6e", "L40S", 48, _AWS_G),
    **_sizes("g4dn", "T4", 16, _AWS_G4DN),
    # Google Cloud
    **_sizes("a2-highgpu-", "A100", 40, {"1g": 1, "2g": 2, "4g": 4, "8g": 8}),
    **_sizes("a2-megagpu-", "A100", 40, {"16g": 16}),
    **_sizes("a2-ultragpu-", "A100", 80, {"1g": 1, "2g": 2, "4g": 4, "8g": 8}),
    **_sizes("a3-highgpu-", "H100", 80, {"8g": 8}),
    **_sizes("a3-megagpu-", "H100", 80, {"8g": 8}),
    **_sizes(
        "g2-standard-",
        "L4",
        24,
        {"4": 1, "8": 1, "12": 1, "16": 1, "32": 1, "24": 2, "48": 4, "96": 8},
    ),
    # Azure
    **_sizes("Standard_ND96asr_v4", "A100", 40, {"": 8}),
    **_sizes("Standard_ND96amsr_A100_v4", "A100", 80, {"": 8}),
    **_sizes("Standard_ND96isr_H100_v5", "H100", 80, {"": 8}),
    **_sizes(
        "Standard_NC", "A100", 80, {"24ads_A100_v4": 1, "48ads_A100_v4": 2, "96ads_A100_v4": 4}
    ),
    **_sizes("Standard_NV", "A10", 24, {"36ads_A10_v5": 1, "72ads_A10_v5": 2}),
    **_sizes(
        "Standard_NC", "T4", 16, {"4as_T4_v3": 1, "8as_T4_v3": 1, "16as_T4_v3": 1, "64as_T4_v3": 4}
    ),
}
