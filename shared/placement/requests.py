"""From a configuration's ``resources`` to what one job asks of a node.

Ranges become requests at their lower bound: ``cpu: 4..`` requests 4 CPUs and
``gpu: 1..8`` one GPU, the least that satisfies the user; the upper bounds
still filter which GPU groups qualify. The disk is requested only when the
configuration names one other than dstack's default (``100GB..``), which would
make small nodes useless on clusters that never set ephemeral-storage limits.
"""

from __future__ import annotations

from typing import Any

from shared.configuration.groups import groups_differ
from shared.configuration.resources import DiskSpec, ResourcesSpec
from shared.placement.locality import Where, where_of
from shared.placement.offers import Request

_GIB = 2**30


def request_for(conf: Any) -> Request:
    """The per-job request of a run (or fleet) configuration."""
    resources: ResourcesSpec = getattr(conf, "resources", None) or ResourcesSpec()
    nodes = int(getattr(conf, "nodes", 1) or 1) if getattr(conf, "type", "") == "task" else 1
    return request_from_resources(resources, nodes=nodes, where=where_of(conf))


def group_requests(conf: Any) -> dict[str, Request]:
    """Each group's per-job request, when a run's groups ask for different resources;
    empty when they all ask the same (``request_for`` then speaks for every job). A
    task group's request counts its own nodes, so whether it is possible is its own."""
    if not groups_differ(conf):
        return {}
    where = where_of(conf)
    task = getattr(conf, "type", "") == "task"
    return {
        str(g.name): request_from_resources(g.resources, nodes=g.nodes if task else 1, where=where)
        for g in conf.groups
    }


def request_from_resources(
    resources: ResourcesSpec, *, nodes: int = 1, where: Where | None = None
) -> Request:
    gpu = resources.gpu
    cpu_min = resources.cpu.count.min if resources.cpu.count else None
    mem_min = resources.memory.min if resources.memory else None
    # By value, not by "was it written": a stored configuration carries every field, so
    # only a disk other than dstack's default (100GB..) is requested.
    disk_min = resources.disk.size.min if resources.disk != DiskSpec() else None
    fields: dict[str, Any] = {
        "cpu_millicores": int((cpu_min or 0) * 1000),
        "memory_bytes": int((mem_min or 0) * _GIB),
        "disk_bytes": int((disk_min or 0) * _GIB),
        "nodes": nodes,
        "where": where,
    }
    if gpu is not None and (gpu.count.max is None or gpu.count.max > 0):
        fields["gpu_count"] = max(int(gpu.count.min or 1), 1)
        fields["gpu_count_max"] = gpu.count.max
        fields["gpu_names"] = frozenset(n.lower() for n in gpu.name or [])
        fields["gpu_vendor"] = gpu.vendor
        if gpu.memory is not None:
            if gpu.memory.min is not None:
                fields["gpu_memory_mib_min"] = int(gpu.memory.min * 1024)
            if gpu.memory.max is not None:
                fields["gpu_memory_mib_max"] = int(gpu.memory.max * 1024)
    return Request(**fields)
