"""The queue in namespace-only mode: admit against the quota, let Kubernetes place. Pure.

Without node reads (:mod:`shared.policy.access`) Berth knows no nodes, so it cannot
pick one, reserve one or tell an impossible request from a busy cluster. What
it still knows is the namespace's ResourceQuotas, and those are the capacity
such a user is given. So:

- a run is admitted when all its jobs fit in what the quotas leave (``rooms``,
  shared by the projects in one namespace; a gang whole or not at all), and
  fails only when it asks more than a quota's hard limit;
- without a quota every run is admitted: the kube-scheduler keeps what it
  cannot place pending, and the job shows the scheduler's own message;
- projects take turns, the one holding the fewest GPUs (then the fewest jobs)
  first, and inside a project priority then submission time, as in
  :mod:`shared.queueing.planner`; a run short of a quota key blocks that key
  for later runs of the pass (:class:`~shared.queueing.namespace_quota.QuotaRoom`).

Each job is placed on :data:`SCHEDULER_NODE`, a name no node has: the pod
gets node affinity from the run's GPU (:mod:`shared.gpu.affinity`) instead
of a node name, and once the scheduler binds it the job records the real node.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from shared.gpu.catalogue import GpuVendor, lookup_product
from shared.gpu.labels import AMD_GPU_RESOURCE, INTEL_GAUDI_RESOURCE, NVIDIA_GPU_RESOURCE
from shared.placement.offers import Request
from shared.queueing.model import Admit, Fail, Holding, Plan, QueuedRun, Wait
from shared.queueing.namespace_quota import QuotaRoom, demand, total
from shared.queueing.order import project_queues
from shared.state.records import Placement

__all__ = ["SCHEDULER_NODE", "gpu_resource", "is_scheduler_node", "plan_namespace_only"]

SCHEDULER_NODE = "~kube-scheduler"
"""The node of a placement left to the kube-scheduler (``~`` is in no node name)."""

_RESOURCES = {
    GpuVendor.NVIDIA.value: NVIDIA_GPU_RESOURCE,
    GpuVendor.AMD.value: AMD_GPU_RESOURCE,
    GpuVendor.INTEL.value: INTEL_GAUDI_RESOURCE,
}


def plan_namespace_only(
    queued: Iterable[QueuedRun],
    holdings: Iterable[Holding],
    *,
    rooms: Mapping[str, QuotaRoom] | None = None,
) -> Plan:
    """Admit, hold or fail every queued run against ``rooms`` alone."""
    rooms = rooms or {}
    result = Plan()
    held: dict[str, tuple[int, int]] = {}
    for holding in holdings:
        gpus, jobs = held.get(holding.project, (0, 0))
        held[holding.project] = (gpus + holding.placement.gpus, jobs + 1)
    queues = project_queues(queued)
    heap = [(held.get(p, (0, 0)), q[0].key, p) for p, q in queues.items()]
    heapq.heapify(heap)
    heads = dict.fromkeys(queues, 0)
    waiting: dict[str, list[tuple[QueuedRun, str]]] = {}
    while heap:
        _, _, project = heapq.heappop(heap)
        run = queues[project][heads[project]]
        heads[project] += 1
        placements = tuple(_placement(run.request_of(job)) for job in range(run.jobs))
        cause = _admit_within(rooms.get(project), run, placements, result)
        if cause is not None:
            waiting.setdefault(project, []).append((run, cause))
        elif result.admits and result.admits[-1].run_id == run.run_id:
            gpus, jobs = held.get(project, (0, 0))
            held[project] = (gpus + sum(p.gpus for p in placements), jobs + len(placements))
        if heads[project] < len(queues[project]):
            head = queues[project][heads[project]]
            heapq.heappush(heap, (held.get(project, (0, 0)), head.key, project))
    for project in sorted(waiting):
        queue = waiting[project]
        for position, (run, cause) in enumerate(queue, start=1):
            result.waits.append(Wait(run.run_id, project, cause, position, len(queue)))
    return result


def is_scheduler_node(node: str) -> bool:
    return node == SCHEDULER_NODE


def gpu_resource(request: Request) -> str | None:
    """The extended resource the run's GPUs are requested as; None for CPU-only work."""
    if not request.gpu_count:
        return None
    vendor = request.gpu_vendor
    if vendor is None:
        vendors = {m.vendor.value for n in request.gpu_names if (m := lookup_product(n))}
        vendor = vendors.pop() if len(vendors) == 1 else GpuVendor.NVIDIA.value
    return _RESOURCES.get(vendor, NVIDIA_GPU_RESOURCE)


def _admit_within(
    room: QuotaRoom | None, run: QueuedRun, placements: tuple[Placement, ...], result: Plan
) -> str | None:
    if room is not None:
        need = total(demand(p, memory_limit_bytes=run.memory_limit_bytes) for p in placements)
        never = room.beyond_hard(need)
        if never is not None:
            result.fails.append(Fail(run.run_id, run.project, f"impossible: {never}"))
            return None
        short = room.shortfall(need)
        if short is not None:
            room.block(need, short)
            return short
        room.take(need)
    result.admits.append(Admit(run.run_id, run.project, placements))
    return None


def _placement(request: Request) -> Placement:
    resource = gpu_resource(request)
    return Placement(
        node=SCHEDULER_NODE,
        gpu_resource=resource,
        gpus=request.gpu_count if resource else 0,
        cpu_milli=request.cpu_millicores,
        memory_bytes=request.memory_bytes,
        disk_bytes=request.disk_bytes,
    )
