"""Best-fit offers without scanning every node: nodes bucketed by free GPUs.

A scheduling pass asks, for each run it admits, "which node fits one job of this
request best" (:func:`shared.placement.offers.match`: the fewest GPUs left over,
then the node name). Answering that by scanning every node that could ever fit
costs time linear in the cluster (12 ms a decision at 1,000 nodes, 66 ms at
5,000, bench scenario 6), and a pass makes one decision per admission.

:class:`FreeIndex` keeps, per request shape, the nodes that could ever take it in
buckets keyed by the free units of the GPU group that would take the job, each
bucket sorted by node name. The best fit is then the first node of the lowest
bucket holding at least the request's count whose CPU, memory and disk also fit:
a decision reads a few nodes, not the cluster. When the pass places or releases
a job on a node, :meth:`FreeIndex.changed` moves that one node between buckets
(a binary search in two sorted lists per shape).

The order of :meth:`FreeIndex.offers` is exactly ``match(...).offers``'s, so the
planner's decisions do not change (tests/shared/test_free_index.py compares the
two on random clusters). Shapes the buckets cannot order -- fleet ``blocks``,
whose GPU count depends on the node -- fall back to ``match``; CPU-only shapes
are already in node-name order and are read lazily.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterator, Mapping
from dataclasses import replace

from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.placement.offers import Offer, Request, fit_ever, match, minus, offer_on


class FreeIndex:
    """Offers for one job of a request, best fit first, over ``inventory`` minus ``reserved``.

    ``reserved`` is read live (the planner's own dict): after changing a node's
    entry, call :meth:`changed` with its name before asking for offers again.
    """

    def __init__(self, inventory: GpuInventory, reserved: Mapping[str, Resources]) -> None:
        self._inventory = inventory
        self._reserved = reserved
        self._shapes: dict[Request, _Buckets] = {}

    def offers(self, request: Request, *, exclude: Collection[str] = ()) -> Iterator[Offer]:
        """``match(inventory, request with nodes=1, reserved).offers`` minus ``exclude``,
        computed as they are read. Invalid once :meth:`changed` is called."""
        one = replace(request, nodes=1) if request.nodes != 1 else request
        if one.blocks is not None:
            offers = match(self._inventory, one, reserved=self._reserved).offers
            return (o for o in offers if o.node not in exclude)
        buckets = self._shapes.get(one)
        if buckets is None:
            buckets = self._shapes[one] = _Buckets(one, fit_ever(self._inventory, one), self)
        return buckets.offers(exclude)

    def changed(self, node: str) -> None:
        """``reserved[node]`` changed: re-file ``node`` in every shape that holds it."""
        for buckets in self._shapes.values():
            buckets.refile(node)

    def available(self, node: NodeInventory) -> Resources:
        """What ``node`` has free once the reserved jobs on it are counted."""
        return minus(node.free, self._reserved.get(node.name))

    def free_units(self, node: NodeInventory, resource: str) -> int:
        held = self._reserved.get(node.name)
        taken = held.gpus.get(resource, 0) if held is not None else 0
        return node.free.gpus.get(resource, 0) - taken


class _Buckets:
    """One request shape: its possible nodes filed by the free units that would take a job."""

    def __init__(
        self,
        request: Request,
        fits: tuple[tuple[NodeInventory, tuple[GpuGroup, ...]], ...],
        index: FreeIndex,
    ) -> None:
        self._request = request
        self._index = index
        # match() ranks equal offers by node name; the inventory is sorted so, but say it here.
        self._fits = sorted(
            ((node, groups) for node, groups in fits if node.schedulable), key=lambda f: f[0].name
        )
        self._groups = {node.name: (node, groups) for node, groups in self._fits}
        self._key: dict[str, int | None] = {}
        self._buckets: dict[int, list[str]] = {}
        if request.gpu_count == 0:
            return  # CPU-only: every offer ranks equal, so node-name order is match()'s
        for node, groups in self._fits:
            key = self._key_of(node, groups)
            self._key[node.name] = key
            if key is not None:
                self._buckets.setdefault(key, []).append(node.name)
        for bucket in self._buckets.values():
            bucket.sort()

    def offers(self, exclude: Collection[str]) -> Iterator[Offer]:
        request = self._request
        if request.gpu_count == 0:
            for node, groups in self._fits:
                if node.name in exclude:
                    continue
                offer = offer_on(node, request, self._index.available(node), groups)
                if offer is not None:
                    yield offer
            return
        for free in sorted(k for k in self._buckets if k >= request.gpu_count):
            for name in self._buckets[free]:
                if name in exclude:
                    continue
                node, groups = self._groups[name]
                offer = offer_on(node, request, self._index.available(node), groups)
                if offer is not None:
                    yield offer

    def refile(self, name: str) -> None:
        if self._request.gpu_count == 0 or name not in self._groups:
            return
        node, groups = self._groups[name]
        old, new = self._key[name], self._key_of(node, groups)
        if old == new:
            return
        if old is not None:
            bucket = self._buckets[old]
            del bucket[bisect.bisect_left(bucket, name)]
        if new is not None:
            bisect.insort(self._buckets.setdefault(new, []), name)
        self._key[name] = new

    def _key_of(self, node: NodeInventory, groups: tuple[GpuGroup, ...]) -> int | None:
        """The free units of the group a job would take (the first with enough), as in
        :func:`shared.placement.offers.offer_on`; None when no group has enough."""
        for group in groups:
            free = self._index.free_units(node, group.resource)
            if free >= self._request.gpu_count:
                return free
        return None
