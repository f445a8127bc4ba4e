"""Fake GPU nodes for the local cluster, described by a node-pool file.

KWOK manages every node carrying ``kwok.x-k8s.io/node: fake`` and keeps the
status we create it with, so capacity and GPU Operator labels are ours to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError

DEFAULT_POOLS_FILE = Path(__file__).with_name("node-pools.yaml")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "berth.dev/local-pool"


class GpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vendor: Literal["nvidia", "amd"] = "nvidia"
    product: str
    """The label value naming the GPU, spelled as ``labels`` spells it (``NVIDIA-L4`` for
    GFD, ``nvidia-l4`` for GKE, ``l40s`` for Karpenter, ``A40`` for CoreWeave, an
    instance type such as ``p3.2xlarge`` for ``instance-type``)."""
    count: int = Field(gt=0)
    memory_mib: int = Field(gt=0)
    labels: Literal["gfd", "gke", "karpenter", "coreweave", "instance-type", "none"] = "gfd"
    """Which labels name the GPU, as the GPU Operator or a managed cluster writes them;
    ``none``: only the device plugin's resource, as on a cluster without either."""


class NodePool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(ge=0)
    cpu: str = "32"
    memory: str = "128Gi"
    ephemeral_storage: str = "500Gi"
    pods: str = "110"
    gpu: GpuSpec | None = None
    labels: dict[str, str] = {}
    provider_id: str | None = None
    """``spec.providerID`` of each node, ``{name}`` standing for the node's name: what a
    cloud's controller writes (``gce://project/zone/{name}``), so ``backends`` has a cloud
    to match on."""


class NodePools(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pools: list[NodePool]


def load_pools(path: Path = DEFAULT_POOLS_FILE) -> NodePools:
    """Parse a node-pool file; errors name the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
        return NodePools.model_validate(raw)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read node pools from {path}: {e}") from e
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {err['msg']}", field=loc) from e


# Beside real nodes, KWOK's would attract pods that never run (the jump host's, or
# any without a node selector): this taint keeps them off, and Berth's offers
# show the fake nodes as unschedulable, with the taint as the reason.
FAKE_TAINT = {"key": "berth.local/kwok", "value": "fake", "effect": "NoSchedule"}


def node_bodies(pools: NodePools, *, tainted: bool = False) -> list[dict[str, Any]]:
    """The Node objects to create, one per pool member, with deterministic names."""
    bodies = [_node(pool, i) for pool in pools.pools for i in range(pool.count)]
    if tainted:
        for body in bodies:
            body["spec"]["taints"].append(dict(FAKE_TAINT))
    return bodies


def _node(pool: NodePool, index: int) -> dict[str, Any]:
    name = f"kwok-{pool.name}-{index}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
        **pool.labels,
    }
    resources = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "ephemeral-storage": pool.ephemeral_storage,
        "pods": pool.pods,
    }
    taints: list[dict[str, str]] = []
    gpu = pool.gpu
    if gpu is not None and gpu.vendor == "nvidia":
        labels |= _nvidia_labels(gpu)
        resources["nvidia.com/gpu"] = str(gpu.count)
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    elif gpu is not None:
        labels |= {
            "amd.com/gpu.product-name": gpu.product,
            "amd.com/gpu.vram": f"{gpu.memory_mib}M",
        }
        resources["amd.com/gpu"] = str(gpu.count)
        taints.append({"key": "amd.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": taints}
        | ({"providerID": pool.provider_id.format(name=name)} if pool.provider_id else {}),
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def _nvidia_labels(gpu: GpuSpec) -> dict[str, str]:
    """The labels each scheme's nodes carry, as its provider documents them."""
    count = str(gpu.count)
    if gpu.labels == "gke":
        # https://cloud.google.com/kubernetes-engine/docs/how-to/gpus
        return {
            "cloud.google.com/gke-accelerator": gpu.product,
            "cloud.google.com/gke-accelerator-count": count,
            "cloud.google.com/gke-gpu": "true",
        }
    if gpu.labels == "karpenter":
        # https://karpenter.sh/docs/concepts/scheduling/#well-known-labels
        return {
            "karpenter.k8s.aws/instance-gpu-name": gpu.product,
            "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia",
            "karpenter.k8s.aws/instance-gpu-count": count,
            "karpenter.k8s.aws/instance-gpu-memory": str(gpu.memory_mib),
        }
    if gpu.labels == "coreweave":
        return {"gpu.nvidia.com/class": gpu.product}
    if gpu.labels == "instance-type":
        return {"node.kubernetes.io/instance-type": gpu.product}
    if gpu.labels == "none":
        return {}
    # https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.product,
        "nvidia.com/gpu.count": count,
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
    }
