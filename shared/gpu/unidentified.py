"""Nodes whose GPUs no label names, and the label that would name them.

Such a node still counts its GPUs (the device plugin advertises them) but no
request naming a model or a memory size can match it, so a user asking for
``H100`` would see a bare "impossible". Reports list these nodes with the fix,
and the matcher says when a request failed only for want of a name.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.gpu.labels import GpuGroup

__all__ = ["UnidentifiedGpus", "fix_for", "unidentified_gpus", "unidentified_groups"]

# What would name the GPUs, per vendor: the label Berth reads first, and who writes it.
_FIXES = {
    GpuVendor.NVIDIA: (
        "label the node nvidia.com/gpu.product=<the driver's product name, e.g."
        " NVIDIA-H100-80GB-HBM3> (GPU Feature Discovery, part of the GPU Operator, writes it)"
    ),
    GpuVendor.AMD: (
        "label the node amd.com/gpu.product-name=<e.g. AMD_Instinct_MI300X> (AMD's node"
        " labeller writes it)"
    ),
}
_DEFAULT_FIX = "label the node with its GPU model"


@dataclass(frozen=True)
class UnidentifiedGpus:
    node: str
    resource: str
    count: int
    fix: str


def unidentified_gpus(inventory: GpuInventory) -> list[UnidentifiedGpus]:
    """Every advertised GPU group no label names, node by node."""
    return [
        UnidentifiedGpus(node.name, group.resource, group.count, fix_for(group))
        for node in inventory.nodes
        for group in unidentified_groups(node)
    ]


def unidentified_groups(node: NodeInventory) -> list[GpuGroup]:
    """The node's advertised GPU groups that have no name (a bare device plugin)."""
    return [g for g in node.gpus if g.name is None and g.count > 0]


def fix_for(group: GpuGroup) -> str:
    return _FIXES.get(group.vendor, _DEFAULT_FIX)
