"""One scheduling decision over the whole queue: who starts, who waits and why, who fails.

The rules, in the order they apply:

1. **Impossible fails.** A run no node (of its fleets) could take even when empty
   fails at once instead of waiting forever.
2. **Fairness between projects (DRF).** Projects take turns: the next run
   considered is the head of the queue of the project with the smallest dominant
   share (see :mod:`shared.queueing.share`), ties to the head that is first in
   priority/FIFO order. Each admission raises that project's share before the
   next turn, so free GPUs go to the project furthest below its share.
3. **Order inside a project.** Priority, then submission time
   (:mod:`shared.queueing.order`).
4. **Gangs.** A run's jobs are placed all together or not at all; the jobs of a
   ``nodes: N`` task go to N distinct nodes. Jobs of groups asking for different
   resources (``QueuedRun.job_requests``) are each placed by their own request,
   still all or none; such a run reserves no nodes when blocked (rule 6).
5. **Quotas and borrowing.** A project may hold at most its quota of each GPU
   model. Past its quota it may *borrow* idle GPUs of a model only while no
   other project waits for that model with quota of its own left; Berth never
   preempts, so borrowed GPUs are *given back* as the borrower's runs finish:
   from then on the owner is waiting, nobody may borrow, and the freed GPUs go to
   the owner (it is also the project below its share).
6. **Backfill by reservation.** A run that does not fit now *reserves* the nodes
   it would start on: among the nodes that could take it once Berth's own jobs
   there finish, the ones with the most of its GPUs already free. For the rest of
   the pass those nodes are out of bounds for every later run, so a smaller run
   behind it may start only on other capacity and cannot delay it. Up to
   ``max_reservations`` blocked runs reserve per pass (1 would be EASY backfill);
   runs blocked by quota reserve nothing (they wait for their own project).
7. **Namespace quotas.** A run is admitted only if all its jobs fit in what the
   ResourceQuotas of its namespace leave (``rooms``, one per namespace, shared by
   the projects in it; see :mod:`shared.queueing.namespace_quota`): a gang
   whole or not at all. One that could never fit under a quota's hard limit fails.
   Blocked by a quota, it reserves no nodes, but later runs in the pass order
   that need what it is short of wait behind it.

Why the reserved run does not starve: a pass recomputes reservations from the
store, so they survive no crash; what carries over is an invariant. While run R
is the first blocked run in the pass order, nothing new is placed on its
reserved nodes, and in the next pass R picks the nodes with the most of its GPUs
free, so the sum over its best nodes of ``min(free, needed)`` never decreases
between passes and grows each time a Berth job on them ends. Berth's batch jobs
end (``max_duration``, or they finish), so R starts after at most the longest of
them. R can lose its place at the front only to a project with a smaller
dominant share, which is the fairness rule and ends as that project's share
grows. Capacity taken by pods Berth did not create is outside this argument.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from shared.gpu.inventory import GpuInventory, Resources
from shared.placement import placements
from shared.placement.free_index import FreeIndex
from shared.placement.offers import Offer, Request, describe, match
from shared.queueing.model import Admit, Fail, Holding, Plan, QueuedRun, Wait
from shared.queueing.namespace_quota import QuotaRoom, demand, total
from shared.queueing.order import QueueKey, project_queues
from shared.queueing.share import Ledger, Quotas, group_model
from shared.state.records import Placement


def plan(
    inventory: GpuInventory,
    queued: Iterable[QueuedRun],
    holdings: Iterable[Holding],
    *,
    quotas: Quotas | None = None,
    max_reservations: int = 8,
    rooms: Mapping[str, QuotaRoom] | None = None,
    elsewhere: Iterable[Holding] = (),
) -> Plan:
    """Decide every queued run against ``inventory`` minus ``holdings``. Pure.

    ``rooms``: project -> what its namespace's ResourceQuotas leave (the same object
    for projects sharing a namespace); a project without one has no namespace quota.
    ``elsewhere``: placements in the projects' other clusters, which count against
    their quotas and shares but take nothing from ``inventory``.
    """
    planner = _Planner(
        inventory, list(holdings), quotas or {}, max_reservations, rooms or {}, list(elsewhere)
    )
    return planner.run(list(queued))


# Offers tentatively taken, with their GPU model and the request of the job taking each.
_Taken = list[tuple[Offer, str | None, Request]]


@dataclass(frozen=True)
class _Shape:
    possible: bool
    reason: str
    models: frozenset[str]
    """GPU models the request could ever use (empty for CPU-only work)."""


class _Planner:
    def __init__(
        self,
        inventory: GpuInventory,
        holdings: list[Holding],
        quotas: Quotas,
        max_reservations: int,
        rooms: Mapping[str, QuotaRoom],
        elsewhere: list[Holding],
    ) -> None:
        self.inventory = inventory
        self.quotas = quotas
        self.rooms = rooms
        self.max_reservations = max_reservations
        self.reserved: dict[str, Resources] = {}
        for holding in holdings:
            node = holding.placement.node
            self.reserved[node] = placements.add(self.reserved.get(node), holding.placement)
        # Offers are read from here, not by scanning every node (shared.placement.free_index);
        # every change to ``reserved`` below tells it which node moved.
        self.index = FreeIndex(inventory, self.reserved)
        self.ledger = Ledger.of(
            inventory, ((h.project, h.placement) for h in [*holdings, *elsewhere])
        )
        self.excluded: set[str] = set()
        self.result = Plan()
        # Memos for 10,000 runs of a few shapes: equal requests share one _Shape, found
        # by run id (str hashes are cached; a Request's hash is recomputed every time).
        self.shapes: dict[Request, _Shape] = {}
        self.shapes_by_id: dict[int, _Shape] = {}  # requests interned by the caller
        self.shape_of: dict[str, _Shape] = {}
        self.mixed: dict[tuple[int, ...], _Shape] = {}  # runs whose groups differ
        self.no_fit: dict[tuple[int, int, frozenset[str]], str] = {}
        self.want: dict[str, dict[str, int]] = {}
        self.shares: dict[str, float] = {}

    def run(self, queued: list[QueuedRun]) -> Plan:
        queues = project_queues(queued)
        for run in queued:
            self.shape_of[run.run_id] = self._run_shape(run)
            self._count_want(run, +1)
        heap: list[tuple[float, QueueKey, str]] = []
        heads = {project: 0 for project in queues}
        for project, queue in queues.items():
            self.shares[project] = self.ledger.dominant_share(project)
            heap.append((self.shares[project], queue[0].key, project))
        heapq.heapify(heap)
        waiting: list[tuple[QueuedRun, str]] = []
        while heap:
            _, _, project = heapq.heappop(heap)
            queue = queues[project]
            run = queue[heads[project]]
            heads[project] += 1
            cause = self._consider(run)
            if cause is not None:
                waiting.append((run, cause))
            if heads[project] < len(queue):
                head = queue[heads[project]]
                heapq.heappush(heap, (self.shares[project], head.key, project))
        self._positions(waiting)
        return self.result

    # -- one run ---------------------------------------------------------------

    def _consider(self, run: QueuedRun) -> str | None:
        """Admit or fail ``run`` (recorded in the result), or return why it waits."""
        shape = self.shape_of[run.run_id]
        if not shape.possible:
            self.result.fails.append(Fail(run.run_id, run.project, shape.reason))
            self._count_want(run, -1)
            return None
        key = (id(shape), run.jobs, run.held_nodes)
        blocked = self.no_fit.get(key)
        if blocked is None:
            placed = self._place(run, within_quota=True)
            if placed is not None:
                return self._admit_within_namespace(run, placed, borrowed=False)
            # Without a quota on the project, the first attempt was already unconstrained.
            capped = bool(self.quotas.get(run.project))
            placed = self._place(run, within_quota=False) if capped else None
            if placed is not None:
                over = self._over_quota(run.project, placed)
                if all(self._may_borrow(run.project, model) for model in over):
                    return self._admit_within_namespace(run, placed, borrowed=True)
                model = over[0]
                held = self.ledger.gpus(run.project, model)
                limit = self.quotas.get(run.project, {}).get(model, 0)
                return f"waiting for quota: {run.project} holds {held} of its {limit} {model}"
            blocked = self.no_fit[key] = f"waiting for capacity: {_describe(run)}"
        held_for = self._reserve(run)
        if held_for:
            return f"{blocked}; {', '.join(held_for)} held for it"
        return blocked

    def _place(self, run: QueuedRun, *, within_quota: bool) -> _Taken | None:
        """Tentatively fit every job; all of them or None (nothing stays reserved)."""
        if run.gang:
            return self._place_gang(run, within_quota=within_quota)
        taken: _Taken = []
        extra: dict[str, int] = {}  # model -> GPUs this run already took in this attempt
        try:
            for job in range(run.jobs):
                request = run.request_of(job)
                offers = self._offers(request, ())
                offer = self._first_within(run, offers, extra, within_quota=within_quota)
                if offer is None:
                    return None
                model = self._model(offer)
                taken.append((offer, model, request))
                self._take(offer, request, +1)  # the next replica may share the node
                if model is not None:
                    extra[model] = extra.get(model, 0) + offer.gpus
            return taken
        finally:
            for offer, _, request in taken:
                self._take(offer, request, -1)

    def _place_gang(self, run: QueuedRun, *, within_quota: bool) -> _Taken | None:
        """A gang's jobs go to distinct nodes: one scan of the nodes serves them all
        (one per job when its groups ask for different resources)."""
        # One pass over the offers serves every job: an offer read once is either taken
        # (its node is then used) or over quota, which it stays as the run takes more.
        offers = self._offers(run.request, run.held_nodes)
        taken: _Taken = []
        extra: dict[str, int] = {}
        for job in range(run.jobs):
            request = run.request_of(job)
            if run.job_requests:
                used = {*run.held_nodes, *(o.node for o, _, _ in taken)}
                offers = self._offers(request, used)
            offer = self._first_within(run, offers, extra, within_quota=within_quota)
            if offer is None:
                return None
            model = self._model(offer)
            taken.append((offer, model, request))
            if model is not None:
                extra[model] = extra.get(model, 0) + offer.gpus
        return taken

    def _offers(self, request: Request, exclude: Iterable[str]) -> Iterator[Offer]:
        """Nodes that fit one job of ``request`` now, best fit first, read as needed."""
        banned = self.excluded.union(exclude) if exclude else self.excluded
        return self.index.offers(request, exclude=banned)

    def _first_within(
        self, run: QueuedRun, offers: Iterable[Offer], extra: dict[str, int], *, within_quota: bool
    ) -> Offer | None:
        for offer in offers:
            if not within_quota:
                return offer
            model = self._model(offer)
            room = self.ledger.headroom(self.quotas, run.project, model)
            if room is None or (model is not None and room - extra.get(model, 0) >= offer.gpus):
                return offer
        return None

    def _admit_within_namespace(
        self, run: QueuedRun, taken: _Taken, *, borrowed: bool
    ) -> str | None:
        """Admit ``run`` if its namespace's quotas leave room for all its jobs, or say why not."""
        room = self.rooms.get(run.project)
        if room is None:
            self._admit(run, taken, borrowed=borrowed)
            return None
        limit = run.memory_limit_bytes
        need = total(
            demand(_placement(offer, request), memory_limit_bytes=limit)
            for offer, _, request in taken
        )
        never = room.beyond_hard(need)
        if never is not None:
            self.result.fails.append(Fail(run.run_id, run.project, f"impossible: {never}"))
            self._count_want(run, -1)
            return None
        short = room.shortfall(need)
        if short is not None:
            room.block(need, short)
            return short
        room.take(need)
        self._admit(run, taken, borrowed=borrowed)
        return None

    def _admit(self, run: QueuedRun, taken: _Taken, *, borrowed: bool) -> None:
        chosen = []
        for offer, _, request in taken:
            placement = _placement(offer, request)
            self.reserved[offer.node] = placements.add(self.reserved.get(offer.node), placement)
            self.index.changed(offer.node)
            self.ledger.add(run.project, placement)
            chosen.append(placement)
        self.shares[run.project] = self.ledger.dominant_share(run.project)
        self.result.admits.append(Admit(run.run_id, run.project, tuple(chosen), borrowed))
        self._count_want(run, -1)

    def _reserve(self, run: QueuedRun) -> tuple[str, ...]:
        """Hold back the nodes ``run`` will start on; () when it cannot reserve."""
        if len(self.result.reservations) >= self.max_reservations or run.job_requests:
            return ()
        banned = self.excluded.union(run.held_nodes) if run.gang else self.excluded
        # Capacity as if Berth's own jobs there had finished (free counts foreign pods only).
        # The request keeps its own node set, so match()'s per-snapshot cache serves it.
        request = replace(run.request, nodes=1)
        shadow = [o for o in match(self.inventory, request).offers if o.node not in banned]
        needed = run.jobs if run.gang else min(run.jobs, len(shadow))
        if len(shadow) < needed or needed == 0:
            return ()
        shadow.sort(key=lambda o: (-self._free_now(o), o.node))
        nodes = tuple(o.node for o in shadow[:needed])
        self.excluded.update(nodes)
        self.result.reservations[run.run_id] = nodes
        return nodes

    # -- bookkeeping -------------------------------------------------------------

    def _run_shape(self, run: QueuedRun) -> _Shape:
        """Possible when every job's request is; the GPU models any of them could use."""
        if not run.job_requests:
            return self._shape(run.request)
        parts = [self._shape(r) for r in dict.fromkeys(run.job_requests)]
        key = tuple(id(p) for p in parts)
        shape = self.mixed.get(key)
        if shape is None:
            impossible = next((p for p in parts if not p.possible), None)
            shape = self.mixed[key] = _Shape(
                impossible is None,
                impossible.reason if impossible is not None else "",
                frozenset().union(*(p.models for p in parts)),
            )
        return shape

    def _shape(self, request: Request) -> _Shape:
        shape = self.shapes_by_id.get(id(request))
        if shape is not None:
            return shape
        shape = self.shapes.get(request)
        if shape is None:
            verdict = match(self.inventory, request)
            ever = verdict.offers  # nodes that fit one job now (for a gang: when it is possible)
            if verdict.possible and request.nodes > 1:
                ever = match(self.inventory, replace(request, nodes=1)).offers
            models = frozenset(m for m in map(self._model, ever) if m is not None)
            shape = self.shapes[request] = _Shape(verdict.possible, verdict.reason, models)
        self.shapes_by_id[id(request)] = shape  # the request outlives the plan: ids are stable
        return shape

    def _count_want(self, run: QueuedRun, delta: int) -> None:
        counts = self.want.setdefault(run.project, {})
        for model in self.shape_of[run.run_id].models:
            counts[model] = counts.get(model, 0) + delta

    def _may_borrow(self, project: str, model: str) -> bool:
        """Idle quota is lent only while no other project waits for it within its own quota."""
        for other, counts in self.want.items():
            if other == project or counts.get(model, 0) <= 0:
                continue
            room = self.ledger.headroom(self.quotas, other, model)
            if room is None or room > 0:
                return False
        return True

    def _over_quota(self, project: str, taken: _Taken) -> list[str]:
        need: dict[str, int] = {}
        for offer, model, _ in taken:
            if model is not None:
                need[model] = need.get(model, 0) + offer.gpus
        return sorted(
            model
            for model, n in need.items()
            if (room := self.ledger.headroom(self.quotas, project, model)) is not None and room < n
        )

    def _model(self, offer: Offer) -> str | None:
        return group_model(offer.group) if offer.group is not None else None

    def _free_now(self, offer: Offer) -> int:
        if offer.group is None:
            return 0
        node = self.ledger.nodes.get(offer.node)
        free = node.free.gpus.get(offer.group.resource, 0) if node else 0
        held = self.reserved.get(offer.node)
        return free - (held.gpus.get(offer.group.resource, 0) if held else 0)

    def _take(self, offer: Offer, request: Request, sign: int) -> None:
        placement = _placement(offer, request)
        current = self.reserved.get(offer.node) or Resources()
        gpus = dict(current.gpus)
        if placement.gpu_resource:
            gpus[placement.gpu_resource] = gpus.get(placement.gpu_resource, 0) + sign * offer.gpus
        self.reserved[offer.node] = Resources(
            cpu_millicores=current.cpu_millicores + sign * placement.cpu_milli,
            memory_bytes=current.memory_bytes + sign * placement.memory_bytes,
            ephemeral_storage_bytes=current.ephemeral_storage_bytes + sign * placement.disk_bytes,
            gpus=gpus,
        )
        self.index.changed(offer.node)

    def _positions(self, waiting: list[tuple[QueuedRun, str]]) -> None:
        # Each project's runs were taken in its queue order, so ``waiting`` keeps it.
        queues: dict[str, list[tuple[QueuedRun, str]]] = {}
        for item in waiting:
            queues.setdefault(item[0].project, []).append(item)
        for project in sorted(queues):
            queue = queues[project]
            for position, (run, cause) in enumerate(queue, start=1):
                self.result.waits.append(Wait(run.run_id, project, cause, position, len(queue)))


def _describe(run: QueuedRun) -> str:
    if not run.job_requests:
        return describe(run.request)
    return " + ".join(describe(replace(r, nodes=1)) for r in dict.fromkeys(run.job_requests))


def _placement(offer: Offer, request: Request) -> Placement:
    return Placement(
        node=offer.node,
        gpu_resource=offer.group.resource if offer.group else None,
        gpu_model=group_model(offer.group) if offer.group else None,
        gpus=offer.gpus,
        # With fleet blocks, the job's whole blocks (shared.placement.blocks), which its
        # pod requests.
        cpu_milli=offer.cpu_millicores
        if offer.cpu_millicores is not None
        else request.cpu_millicores,
        memory_bytes=offer.memory_bytes if offer.memory_bytes is not None else request.memory_bytes,
        disk_bytes=request.disk_bytes,
    )
