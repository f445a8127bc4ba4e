"""Matching what a run asks for against what the cluster has: offers and placement.

Pure functions over :class:`~shared.gpu.inventory.GpuInventory`. An *offer* is
one node (or, for ``nodes: N``, a set of N nodes) that can take the request.
A request no node could ever satisfy, even empty, is *impossible*; one that
only lacks free capacity now is *busy*. The scheduler and ``berth offer`` use
the same predicate, so what ``offer`` shows is what ``apply`` can get.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from shared.gpu.catalogue import lookup_product, nominal_memory_gib
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.gpu.unidentified import fix_for, unidentified_groups
from shared.placement.blocks import Blocks, block_share
from shared.placement.locality import Where


@dataclass(frozen=True)
class Request:
    """One job's needs, in base units. ``gpu_count == 0`` means no accelerator."""

    gpu_count: int = 0
    gpu_count_max: int | None = None
    gpu_names: frozenset[str] = frozenset()
    """Canonical names, lower-case (``h100``); empty means any model."""
    gpu_vendor: str | None = None
    gpu_memory_mib_min: int | None = None
    gpu_memory_mib_max: int | None = None
    cpu_millicores: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    nodes: int = 1
    allowed_nodes: frozenset[str] | None = None
    """Restricts placement (a fleet's nodes); None means every node."""
    blocks: Blocks | None = None
    """The fleet's ``blocks``: each job takes whole blocks of its node
    (:mod:`shared.placement.blocks`); None: just what it asks."""
    where: Where | None = None
    """The instance types, zones and regions it accepts (:mod:`shared.placement.locality`);
    None: anywhere."""


@dataclass(frozen=True)
class Offer:
    node: str
    group: GpuGroup | None
    gpus: int
    """GPUs this offer would take: the request's count (the smallest that fits)."""
    free_gpus: int
    total_gpus: int
    cpu_millicores: int | None = None
    memory_bytes: int | None = None
    """With ``blocks``, the CPU and memory the job's blocks hold (its pod requests
    them); None: the request's own."""


@dataclass
class Verdict:
    offers: list[Offer] = field(default_factory=list)
    """Nodes that fit now, best fit first."""
    possible: bool = True
    """False when no node could fit the request even if the cluster were empty."""
    reason: str = ""


def match(
    inventory: GpuInventory,
    request: Request,
    *,
    reserved: Mapping[str, Resources] | None = None,
) -> Verdict:
    """Every node that fits ``request`` now, with ``reserved`` subtracted from free."""
    reserved = reserved or {}
    now: list[Offer] = []
    ever = fit_ever(inventory, request)
    for node, groups in ever:  # free never exceeds allocatable: no other node fits now
        if not node.schedulable:
            continue
        offer = offer_on(node, request, minus(node.free, reserved.get(node.name)), groups)
        if offer is not None:
            now.append(offer)
    now.sort(key=lambda o: (o.free_gpus - o.gpus, o.node))  # best fit keeps big nodes whole
    if len(ever) < request.nodes:
        return Verdict(offers=[], possible=False, reason=_impossible(inventory, request))
    if len(now) < request.nodes:
        return Verdict(offers=now, reason=f"no capacity now for {describe(request)}")
    return Verdict(offers=now)


# The nodes that could take a request were the cluster empty depend only on the
# snapshot and the request. A scheduling pass asks match() for every queued run
# against one snapshot, reused across passes while it is unchanged
# (shared.state.inventory_store), and queued runs mostly ask for a few shapes: this
# cache turns the scan of every node into a scan of the nodes that can fit. Only
# the latest few snapshots are kept (each can be megabytes), and threads share it.
_Fit = tuple[NodeInventory, tuple[GpuGroup, ...]]
_EVER: dict[int, tuple[GpuInventory, dict[Request, tuple[_Fit, ...]]]] = {}
_EVER_SNAPSHOTS = 4  # about the clusters one process places on at a time
_EVER_SHAPES = 1024
_EVER_LOCK = threading.Lock()


def fit_ever(inventory: GpuInventory, request: Request) -> tuple[_Fit, ...]:
    """Each node that could take ``request`` if empty, with its groups that match it."""
    with _EVER_LOCK:
        entry = _EVER.get(id(inventory))
        found = entry[1].get(request) if entry is not None and entry[0] is inventory else None
    if found is not None:
        return found
    allowed = request.allowed_nodes
    fit = tuple(
        (node, tuple(_matching_groups(node.gpus, request)))
        for node in inventory.nodes
        if (allowed is None or node.name in allowed) and fits(node, request, node.allocatable)
    )
    with _EVER_LOCK:
        entry = _EVER.get(id(inventory))
        if entry is None or entry[0] is not inventory:
            while len(_EVER) >= _EVER_SNAPSHOTS:
                del _EVER[next(iter(_EVER))]  # the oldest snapshot
            entry = _EVER[id(inventory)] = (inventory, {})
        if len(entry[1]) >= _EVER_SHAPES:
            entry[1].clear()
        entry[1][request] = fit
    return fit


def clear_fit_cache() -> None:
    """Forget every snapshot's fitting nodes (the bench times a cold match with it)."""
    with _EVER_LOCK:
        _EVER.clear()


def fits(node: NodeInventory, request: Request, available: Resources) -> bool:
    """Whether ``available`` on ``node`` covers one job of ``request``."""
    return offer_on(node, request, available) is not None


def describe(request: Request) -> str:
    parts = []
    if request.gpu_count:
        names = ",".join(sorted(n.upper() for n in request.gpu_names)) or "any GPU"
        mem = f" >={request.gpu_memory_mib_min // 1024}GB" if request.gpu_memory_mib_min else ""
        parts.append(f"{request.gpu_count}x {names}{mem}")
    if request.cpu_millicores:
        parts.append(f"{request.cpu_millicores / 1000:g} CPU")
    if request.memory_bytes:
        parts.append(f"{request.memory_bytes / 2**30:g}GB memory")
    what = ", ".join(parts) or "no resources"
    if request.nodes > 1:
        what = f"{what} on {request.nodes} node(s)"
    return f"{what} in {request.where.describe()}" if request.where is not None else what


def _impossible(inventory: GpuInventory, request: Request) -> str:
    """Why no node could ever take ``request``, naming nodes whose GPUs lack only a name."""
    reason = f"impossible: {describe(request)}"
    if not request.gpu_count or not (request.gpu_names or request.gpu_memory_mib_min):
        return reason
    # The same request without the model and memory, which an unnamed GPU cannot answer.
    anonymous = replace(
        request, gpu_names=frozenset(), gpu_memory_mib_min=None, gpu_memory_mib_max=None
    )
    blind = [
        node
        for node in inventory.nodes
        if (request.allowed_nodes is None or node.name in request.allowed_nodes)
        and any(g.count >= request.gpu_count for g in unidentified_groups(node))
        and fits(node, anonymous, node.allocatable)
    ]
    if not blind:
        return reason
    names = ", ".join(n.name for n in blind[:5]) + (" ..." if len(blind) > 5 else "")
    fix = fix_for(unidentified_groups(blind[0])[0])
    return (
        f"{reason}: no node Berth can identify has it, but {len(blind)} node(s) ({names}) have"
        f" GPUs no label names, which might be what you asked for; to use them, {fix}"
    )


def offer_on(
    node: NodeInventory,
    request: Request,
    available: Resources,
    groups: tuple[GpuGroup, ...] | None = None,
) -> Offer | None:
    """The offer ``node`` makes one job of ``request`` out of ``available``, or None.

    ``groups``: the node's groups that match the request, when known already.
    """
    if request.where is not None and not request.where.allows(node.locality):
        return None
    if request.blocks is not None:
        return _block_offer(node, request, available)
    if available.cpu_millicores < request.cpu_millicores:
        return None
    if available.memory_bytes < request.memory_bytes:
        return None
    if request.disk_bytes and available.ephemeral_storage_bytes < request.disk_bytes:
        return None
    if request.gpu_count == 0:
        if any(g.count for g in node.gpus):
            # GPU nodes carry the GPU taint and are too dear for CPU-only work.
            return None
        return Offer(node=node.name, group=None, gpus=0, free_gpus=0, total_gpus=0)
    for group in _matching_groups(node.gpus, request) if groups is None else groups:
        free = available.gpus.get(group.resource, 0)
        if free >= request.gpu_count:
            return Offer(
                node=node.name,
                group=group,
                gpus=request.gpu_count,
                free_gpus=free,
                total_gpus=group.count,
            )
    return None


def _block_offer(node: NodeInventory, request: Request, available: Resources) -> Offer | None:
    """The offer for the whole blocks of ``node`` that hold ``request`` (fleet ``blocks``)."""
    assert request.blocks is not None
    groups = list(_matching_groups(node.gpus, request)) if request.gpu_count else [None]
    for group in groups:
        share = block_share(
            request.blocks,
            node_gpus=group.count if group is not None else 0,
            node_cpu_millicores=node.allocatable.cpu_millicores,
            node_memory_bytes=node.allocatable.memory_bytes,
            gpus=request.gpu_count,
            cpu_millicores=request.cpu_millicores,
            memory_bytes=request.memory_bytes,
            whole_node=request.nodes > 1,  # dstack: distributed tasks take every block
        )
        if share is None:
            continue
        rounded = replace(
            request,
            gpu_count=share.gpus,
            gpu_count_max=None,
            cpu_millicores=share.cpu_millicores,
            memory_bytes=share.memory_bytes,
            blocks=None,
        )
        offer = offer_on(node, rounded, available)
        if offer is not None and (group is None or offer.group == group):
            return replace(
                offer, cpu_millicores=share.cpu_millicores, memory_bytes=share.memory_bytes
            )
    return None


def _matching_groups(groups: Iterable[GpuGroup], request: Request) -> Iterable[GpuGroup]:
    for group in groups:
        if request.gpu_vendor and group.vendor.value != request.gpu_vendor:
            continue
        if request.gpu_names and not _name_matches(group, request.gpu_names):
            continue
        mem = nominal_memory_mib(group)
        if request.gpu_memory_mib_min is not None and (
            mem is None or mem < request.gpu_memory_mib_min
        ):
            continue
        if request.gpu_memory_mib_max is not None and (
            mem is None or mem > request.gpu_memory_mib_max
        ):
            continue
        if request.gpu_count_max is not None and request.gpu_count > request.gpu_count_max:
            continue
        yield group


def nominal_memory_mib(group: GpuGroup) -> int | None:
    """The GPU's memory as users name it: an "80GB" H100 reports 81559 MiB in its
    labels, which is 79.6 GiB; matching ``H100:80GB`` must still succeed, so known
    whole GPUs use the catalogue's nominal size, and whole GPUs the catalogue does
    not know round their measured size to the nearest size GPUs are sold in (an
    H800 at 81559 MiB is an 80GB part). MIG slices keep their own size."""
    if group.mig_profile is not None or group.memory_mib is None:
        return group.memory_mib
    if group.product:
        model = lookup_product(group.product)
        if model is not None and model.memory_gib:
            return int(model.memory_gib * 1024)
    return nominal_memory_gib(group.memory_mib) * 1024


def _name_matches(group: GpuGroup, names: frozenset[str]) -> bool:
    candidates = {c.lower() for c in (group.name, group.product) if c}
    return bool(candidates & names)


def minus(free: Resources, reserved: Resources | None) -> Resources:
    """``free`` less what ``reserved`` holds (None: nothing held)."""
    if reserved is None:
        return free
    gpus = dict(free.gpus)
    for resource, n in reserved.gpus.items():
        gpus[resource] = gpus.get(resource, 0) - n
    return Resources(
        cpu_millicores=free.cpu_millicores - reserved.cpu_millicores,
        memory_bytes=free.memory_bytes - reserved.memory_bytes,
        ephemeral_storage_bytes=free.ephemeral_storage_bytes - reserved.ephemeral_storage_bytes,
        gpus=gpus,
    )
