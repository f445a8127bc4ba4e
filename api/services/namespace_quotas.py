"""Refusing, at submission, a run that its namespace's ResourceQuotas could never admit.

A run that fits a quota's hard limit but not what is free now is accepted and
waits in the queue (the scheduler names the quota in its reason); one that asks
more than the hard limit would wait forever, so it fails here, naming the quota,
for ``berth apply`` (both plan and submission) to show.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from shared.clusters import ClusterRegistry
from shared.errors import ConfigError, KubeError
from shared.gpu.inventory import GpuInventory
from shared.placement.offers import Request, match
from shared.placement.requests import request_for
from shared.policy import access, limit_ranges, resource_quotas
from shared.queueing.namespace_only import gpu_resource
from shared.queueing.namespace_quota import demand, memory_limit_of, room_for, total
from shared.state.inventory_store import load_inventory
from shared.state.jobs import jobs_for
from shared.state.records import Placement, Run
from shared.state.store import Store

# The device plugins' resource names, for a cluster whose inventory shows no such GPU.
_DEFAULT_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}


def check_namespace_quota(store: Store, clusters: ClusterRegistry, project: str, conf: Any) -> None:
    """ConfigError naming the quota when no placement of the run fits under its hard
    limits in any cluster of the project (the first cluster's refusal is shown).

    One LIST per cluster with the client's timeout. When Berth may not read the quotas,
    or the apiserver does not answer, nothing is refused here: the scheduler and the
    provisioning workers treat a pod refused for quota as a wait anyway.
    """
    refusals: list[ConfigError] = []
    for name in clusters.names_of(project):
        try:
            _check_in(store, clusters, project, name, conf)
        except ConfigError as e:
            refusals.append(e)
        else:
            return
    raise refusals[0]


def _check_in(store: Store, clusters: ClusterRegistry, project: str, name: str, conf: Any) -> None:
    _check_limit_ranges(store, clusters, project, name, conf)
    try:
        cluster = clusters.for_project(project, name)
        quotas = cluster.recent.get("resourcequotas", partial(resource_quotas.read_quotas, cluster))
    except KubeError:
        return
    room = room_for(quotas)
    if room is None:
        return
    request = request_for(conf)
    jobs = len(
        jobs_for(
            Run(
                id="",
                project=project,
                name="",
                user="",
                configuration={},
                configuration_type=conf.type,
            ),
            conf,
        )
    )
    refusals = []
    for resource in _gpu_resources(store, clusters, project, name, request):
        placement = Placement(
            node="",
            gpu_resource=resource,
            gpus=request.gpu_count if resource else 0,
            cpu_milli=request.cpu_millicores,
            memory_bytes=request.memory_bytes,
            disk_bytes=request.disk_bytes,
        )
        one = demand(placement, memory_limit_bytes=memory_limit_of(conf))
        refusal = room.beyond_hard(total([one] * jobs))
        if refusal is None:
            return  # some placement fits under every quota
        refusals.append(refusal)
    raise ConfigError(refusals[0], field="resources")


def _check_limit_ranges(
    store: Store, clusters: ClusterRegistry, project: str, name: str, conf: Any
) -> None:
    """ConfigError naming the LimitRange the run's container would break (one LIST).

    Unreadable LimitRanges (403, apiserver away) refuse nothing: pod creation would.
    """
    try:
        cluster = clusters.for_project(project, name)
        found = cluster.recent.get("limitranges", partial(limit_ranges.read_limit_ranges, cluster))
    except KubeError:
        return
    if not found:
        return
    request = request_for(conf)
    requests = {
        "cpu": request.cpu_millicores,
        "memory": request.memory_bytes,
        "ephemeral-storage": request.disk_bytes,
    }
    limits: dict[str, int] = {}
    memory_limit = memory_limit_of(conf)
    if memory_limit:
        limits["memory"] = memory_limit
    for resource in _gpu_resources(store, clusters, project, name, request):
        if resource:
            requests[resource] = limits[resource] = request.gpu_count
    refusal = limit_ranges.check(found, requests=requests, limits_set=limits)
    if refusal is not None:
        raise ConfigError(refusal, field="resources")


def _gpu_resources(
    store: Store, clusters: ClusterRegistry, project: str, name: str, request: Request
) -> list[str | None]:
    """The GPU resources (``nvidia.com/gpu``, a MIG profile) the run's jobs could use."""
    if not request.gpu_count:
        return [None]
    mode = access.access_for(store, clusters, project, recheck_s=None, cluster=name).mode
    if mode != access.Mode.CLUSTER:
        return [gpu_resource(request)]  # no nodes to look at: what the pod will request
    inventory = load_inventory(store, clusters, project, name)
    # Every node as if empty: which could take the run at all, not which can now.
    empty = GpuInventory(
        nodes=tuple(n.model_copy(update={"free": n.allocatable}) for n in inventory.nodes)
    )
    offers = match(empty, replace(request, nodes=1)).offers
    found = sorted({o.group.resource for o in offers if o.group is not None})
    if found:
        return list(found)
    return [_DEFAULT_RESOURCE.get(request.gpu_vendor or "nvidia", "nvidia.com/gpu")]
