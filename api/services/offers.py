"""Offers: which nodes can take a request now, in the shape the CLI prints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from api.services.nodes import UnidentifiedPublic, gpu_memory, unidentified_public
from shared.clusters import Cluster, ClusterRegistry
from shared.configuration.base import config_error_from_validation
from shared.configuration.resources import ResourcesSpec
from shared.configuration.server import KubernetesBackend
from shared.errors import ConfigError, KubeError, KubeForbidden
from shared.gpu.affinity import gpu_node_affinity
from shared.gpu.inventory import GpuInventory
from shared.placement import placements
from shared.placement.autoscaling import is_pool_node, pool_of
from shared.placement.offers import Offer, Request, describe, match
from shared.placement.placement_facts import selector_nodes, with_pools
from shared.placement.requests import request_from_resources
from shared.policy import access, resource_quotas
from shared.queueing.namespace_quota import describe_quota
from shared.state.inventory_store import load_inventory
from shared.state.records import Job
from shared.state.store import Store


class OfferPublic(BaseModel):
    backend: str
    cluster: str = ""
    """The project's name for the node's cluster (its kubeconfig context; ``default``)."""
    node: str
    gpu: str | None
    gpu_memory: str | None
    count: int
    free: int
    total: int
    price: str | None
    gpu_source: str | None = None
    """Which labels named the GPU (gfd, gke, karpenter, coreweave, instance-type, ...)."""


class OffersPublic(BaseModel):
    summary: str
    possible: bool
    reason: str
    nodes: int
    offers: list[OfferPublic]
    unidentified: list[UnidentifiedPublic] = []
    """Nodes with GPUs no label names (no request for a model can use them), with the fix."""
    pod_requests: dict[str, str] = {}
    """What each job's pod asks Kubernetes for (``cpu``, ``memory``, GPUs,
    ``ephemeral-storage``), as quantities; a resource left out is not requested."""
    access_mode: str = "cluster"
    """What Berth may read on the backend (``shared/policy/access.py``): ``cluster``,
    ``namespace`` (node offers unknown; the kube-scheduler places) or ``none``."""
    access_reason: str = ""
    quota: list[str] = []
    """Namespace-only: what the namespace's ResourceQuotas allow, one line per limit."""


def offers_for(
    store: Store,
    clusters: ClusterRegistry,
    project: str,
    request: Request,
) -> OffersPublic:
    """The offers of every cluster of the project, in the order runs try them."""
    found = [_offers_in(store, clusters, project, n, request) for n in clusters.names_of(project)]
    if len(found) == 1:
        return found[0]
    first = next((o for o in found if o.possible), found[0])
    return first.model_copy(
        update={
            "possible": any(o.possible for o in found),
            "reason": "; ".join(
                f"cluster {name}: {o.reason}"
                for name, o in zip(clusters.names_of(project), found, strict=True)
                if o.reason
            ),
            "offers": [offer for o in found for offer in o.offers],
            "unidentified": [u for o in found for u in o.unidentified],
            "quota": [line for o in found for line in o.quota],
        }
    )


def _offers_in(
    store: Store, clusters: ClusterRegistry, project: str, name: str, request: Request
) -> OffersPublic:
    found = access.access_for(store, clusters, project, recheck_s=None, cluster=name)
    if found.mode != access.Mode.CLUSTER:
        return _without_node_reads(clusters, project, name, request, found)
    try:
        inventory = load_inventory(store, clusters, project, name)
    except KubeForbidden:
        # The mode changed since it was last asked.
        access.forget(store, clusters, project, name)
        found = access.access_for(store, clusters, project, recheck_s=None, cluster=name)
        if found.mode == access.Mode.CLUSTER:
            raise
        return _without_node_reads(clusters, project, name, request, found)
    cluster = clusters.for_project(project, name)
    key = cluster.backend.cluster_key()
    # Only this cluster's jobs: node names repeat between clusters.
    held = placements.reserved(
        j
        for run, jobs in placements.active_runs(store)
        for j in jobs
        if _cluster_key(clusters, run.project, j) == key
    )
    # Autoscaling pools offer the nodes they may still add, as the scheduler sees them.
    inventory = with_pools(inventory, cluster, held=held)
    request = _within_node_selector(cluster, inventory, request)
    verdict = match(inventory, request, reserved=held)
    return OffersPublic(
        summary=describe(request),
        possible=verdict.possible,
        reason=verdict.reason,
        nodes=request.nodes,
        offers=[_public(o, cluster.backend) for o in verdict.offers],
        unidentified=unidentified_public(inventory),
        pod_requests=pod_requests(request),
        access_reason=found.reason,
    )


def _cluster_key(clusters: ClusterRegistry, project: str, job: Job) -> str | None:
    try:
        return clusters.key_for(project, clusters.name_of(job))
    except ConfigError:
        return None  # a project (or cluster) no longer in the config holds nothing here


def _without_node_reads(
    clusters: ClusterRegistry, project: str, name: str, request: Request, found: access.Access
) -> OffersPublic:
    """Namespace-only: no node is known, so no offer; the quota is what can be said."""
    cluster = clusters.for_project(project, name)
    try:
        quotas = resource_quotas.read_quotas(cluster)
        quota = [line for q in quotas for line in describe_quota(q)] or [
            f"no ResourceQuota in namespace {cluster.namespace}"
        ]
    except KubeError as e:
        quota = [f"cannot read the namespace's quotas: {e.message}"]
    unplaceable = None
    try:
        gpu_node_affinity(request)
    except ValueError as e:
        unplaceable = f"the kube-scheduler cannot be asked for it: {e}"
    if found.mode == access.Mode.NONE:
        reason = f"nothing can run on backend kubernetes/{cluster.namespace}: {found.reason}"
    elif unplaceable is not None:
        reason = unplaceable
    else:
        reason = (
            f"node offers are unknown: backend kubernetes/{cluster.namespace} runs in"
            f" namespace-only mode ({found.reason})"
        )
    return OffersPublic(
        summary=describe(request),
        possible=found.mode != access.Mode.NONE and unplaceable is None,
        reason=reason,
        nodes=request.nodes,
        offers=[],
        pod_requests=pod_requests(request),
        access_mode=found.mode.value,
        access_reason=found.reason,
        quota=quota,
    )


def _within_node_selector(cluster: Cluster, inventory: GpuInventory, request: Request) -> Request:
    """Only the nodes the backend's node selector lets runs use, as the scheduler sees them.

    Autoscaling pool nodes stay (their labels are the pool's). If the apiserver
    cannot be asked now, the offers are not narrowed: a plan is advice, and the
    scheduler applies the selector anyway.
    """
    selector = cluster.backend.pod_settings().node_selector
    if not selector:
        return request
    try:
        matching = selector_nodes(cluster, selector)
    except KubeError:
        return request
    pool_nodes = {n.name for n in inventory.nodes if is_pool_node(n.name)}
    allowed = matching | pool_nodes
    if request.allowed_nodes is not None:
        allowed = allowed & request.allowed_nodes
    return replace(request, allowed_nodes=frozenset(allowed))


def pod_requests(request: Request) -> dict[str, str]:
    """The requests of one job's pod, in Kubernetes quantities.

    Ranges are requested at their lower bound, as the pod spec will be; disk is
    requested only when the configuration sets it (dstack's ``100GB..`` default
    would make every node with a smaller ephemeral disk unusable).
    """
    out: dict[str, str] = {}
    if request.cpu_millicores:
        out["cpu"] = f"{request.cpu_millicores}m"
    if request.memory_bytes:
        out["memory"] = _gi(request.memory_bytes)
    if request.gpu_count:
        names = ",".join(sorted(n.upper() for n in request.gpu_names)) or "any"
        out["gpu"] = f"{request.gpu_count} ({names})"
    if request.disk_bytes:
        out["ephemeral-storage"] = _gi(request.disk_bytes)
    return out


def _gi(n: int) -> str:
    return f"{n / 2**30:g}Gi"


def resources_from_query(**query: Any) -> ResourcesSpec:
    """``?gpu=A100:80GB:2&cpu=4..`` parsed with the configuration grammar."""
    raw = {k: v for k, v in query.items() if v is not None}
    try:
        return ResourcesSpec.model_validate(raw)
    except ValidationError as e:
        err = config_error_from_validation(e, data=raw)
        raise ConfigError(err.message, field=err.field) from e


def request_for_query(nodes: int = 1, **query: Any) -> Request:
    return request_from_resources(resources_from_query(**query), nodes=nodes)


def _public(offer: Offer, backend: KubernetesBackend) -> OfferPublic:
    group = offer.group
    memory = gpu_memory(group) if group else None
    name = (group.name or group.product) if group else None
    prices = backend.gpu_prices or {}
    price = prices.get(name) if name else None
    pool = pool_of(offer.node)
    return OfferPublic(
        backend=f"kubernetes/{backend.namespace}",
        cluster=backend.cluster_name(),
        node=f"(autoscaled) pool {pool}" if pool else offer.node,
        gpu=name,
        gpu_memory=memory,
        count=offer.gpus,
        free=offer.free_gpus,
        total=offer.total_gpus,
        price=f"${price * max(offer.gpus, 1):.2f}/h" if price is not None else None,
        gpu_source=group.scheme if group else None,
    )
