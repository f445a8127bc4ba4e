"""The cluster's nodes as Berth sees them: GPUs, where their names came from, what is free.

This is the inventory the scheduler places against, so an operator can check
that every GPU node is identified (and by which labels) before users ask for it.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.clusters import ClusterRegistry
from shared.errors import NotSupportedError
from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.gpu.labels import GpuGroup
from shared.gpu.unidentified import unidentified_gpus
from shared.placement.offers import nominal_memory_mib
from shared.policy import access
from shared.state.inventory_store import load_inventory
from shared.state.store import Store


class NodeGpuPublic(BaseModel):
    resource: str
    """The extended resource pods request: nvidia.com/gpu, nvidia.com/mig-1g.10gb, ..."""
    name: str | None
    """The short name runs ask for (``H100``); ``None`` when no label names the GPU."""
    product: str | None
    """The label value that named it, verbatim."""
    memory: str | None
    source: str
    """Which labels named it: gfd, gke, karpenter, coreweave, instance-type, amd, gaudi,
    or device-plugin when none did."""
    known: bool
    """Whether Berth's catalogue lists the product (else the name is read from the label)."""
    count: int
    free: int


class NodePublic(BaseModel):
    name: str
    cluster: str = ""
    """The project's name for the node's cluster (its kubeconfig context; ``default``)."""
    schedulable: bool
    reasons: list[str]
    gpus: list[NodeGpuPublic]
    cpu: str
    memory: str
    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None
    """Where it is, from its well-known labels: what ``instance_types``,
    ``availability_zones`` and ``regions`` match (``shared.placement.locality``)."""
    backend: str | None = None
    """Its cloud, as ``backends`` names it, from its providerID."""


class UnidentifiedPublic(BaseModel):
    node: str
    resource: str
    count: int
    fix: str
    """The label that would name these GPUs."""


class NodesPublic(BaseModel):
    nodes: list[NodePublic]
    unidentified: list[UnidentifiedPublic]


def list_nodes(store: Store, clusters: ClusterRegistry, project: str) -> NodesPublic:
    """The nodes of every cluster of the project whose nodes Berth may read."""
    readable: list[tuple[str, GpuInventory]] = []
    refusal = ""
    for name in clusters.names_of(project):
        found = access.access_for(store, clusters, project, recheck_s=None, cluster=name)
        if found.mode == access.Mode.CLUSTER:
            readable.append((name, load_inventory(store, clusters, project, name)))
        elif not refusal:
            refusal = f"{found.mode} mode: {found.reason}"
    if not readable:
        raise NotSupportedError(
            f"the nodes are unknown: Berth may not read them here ({refusal});"
            " berth offer shows what the namespace's quota allows"
        )
    return NodesPublic(
        nodes=[
            _node(n).model_copy(update={"cluster": name})
            for name, inventory in readable
            for n in inventory.nodes
        ],
        unidentified=[u for _, inventory in readable for u in unidentified_public(inventory)],
    )


def unidentified_public(inventory: GpuInventory) -> list[UnidentifiedPublic]:
    return [
        UnidentifiedPublic(node=u.node, resource=u.resource, count=u.count, fix=u.fix)
        for u in unidentified_gpus(inventory)
    ]


def gpu_memory(group: GpuGroup) -> str | None:
    mem = nominal_memory_mib(group)
    return f"{mem // 1024}GB" if mem else None


def _node(node: NodeInventory) -> NodePublic:
    return NodePublic(
        name=node.name,
        schedulable=node.schedulable,
        reasons=list(node.reasons),
        gpus=[
            NodeGpuPublic(
                resource=g.resource,
                name=g.name,
                product=g.product,
                memory=gpu_memory(g),
                source=g.scheme,
                known=g.known,
                count=g.count,
                free=node.free_units(g),
            )
            for g in node.gpus
        ],
        cpu=f"{node.free.cpu_millicores / 1000:g}/{node.allocatable.cpu_millicores / 1000:g}",
        memory=(
            f"{node.free.memory_bytes / 2**30:.0f}/{node.allocatable.memory_bytes / 2**30:.0f}GB"
        ),
        instance_type=node.instance_type,
        zone=node.zone,
        region=node.region,
        backend=node.backend,
    )
