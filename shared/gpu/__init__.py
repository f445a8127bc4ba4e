"""What accelerators the cluster has and how many are free, as pure functions.

Three layers, each importing only the one below it:

* :mod:`shared.gpu.catalogue` - product string or AMD PCI id → canonical model.
* :mod:`shared.gpu.labels` - one node's labels and allocatable → GPU groups.
* :mod:`shared.gpu.inventory` - ``V1Node``/``V1Pod`` objects → :class:`GpuInventory`,
  in one go or incrementally from watch events.

Nothing here talks to the network; the watcher that feeds the builder lives elsewhere.
"""

from shared.gpu.catalogue import GpuModel, GpuVendor, lookup_amd_device_id, lookup_product
from shared.gpu.inventory import (
    GpuInventory,
    InventoryBuilder,
    NodeInventory,
    Resources,
    UnknownProduct,
    build_inventory,
)
from shared.gpu.labels import GpuGroup, NodeGpus, node_gpus

__all__ = [
    "GpuGroup",
    "GpuInventory",
    "GpuModel",
    "GpuVendor",
    "InventoryBuilder",
    "NodeGpus",
    "NodeInventory",
    "Resources",
    "UnknownProduct",
    "build_inventory",
    "lookup_amd_device_id",
    "lookup_product",
    "node_gpus",
]
