"""Nodes and pods → what GPUs, CPU, memory and disk each node still has free.

Free is allocatable minus the requests of the pods bound to the node that have
not finished, counted the way kube-scheduler counts them
(``k8s.io/component-helpers/resource.PodRequests``): the sum of the app
containers and sidecars, or the largest init-container step if that is larger,
pod-level requests replacing the container sum for CPU and memory, plus the
RuntimeClass overhead. A resource a container only *limits* counts as requested,
because the apiserver defaults requests to limits. Each pod's total is rounded
up once (``MilliValue()`` for CPU, ``Value()`` for the rest), so all the
bookkeeping below is exact integer arithmetic: adding and removing a pod a
thousand times leaves no drift, which lets :class:`InventoryBuilder` keep
per-node sums incrementally and still equal a rebuild from scratch.

Nodes that cannot take new pods (NotReady, cordoned, or carrying a NoSchedule
or NoExecute taint that is not a GPU taint) stay in the inventory with
``schedulable=False`` and the reasons, so reports can say why capacity is not
offered. GPUs the catalogue does not know are kept and listed in
``GpuInventory.unknown_products``.

Objects are read as the API's JSON, never as client model objects: nodes as
mappings (:mod:`shared.kube.raw`), pods as a :class:`~shared.gpu.pod_view.PodView`
of the few fields counted here. Each pod is kept as a :class:`PodRecord` (its
key, node and rounded requests, nothing else), so the builder's memory is a
few hundred bytes per pod, not the whole object.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from shared.gpu.catalogue import GpuVendor
from shared.gpu.labels import GPU_TAINT_KEYS, GpuGroup, is_gpu_resource, node_gpus
from shared.gpu.pod_view import PodView, ResourcesView, pod_view
from shared.kube.raw import Raw, as_raw, dig, labels_of
from shared.placement.locality import Locality, node_locality
from shared.quantity import QuantityError, parse_quantity

__all__ = [
    "GpuInventory",
    "InventoryBuilder",
    "NodeInventory",
    "NodeRecord",
    "PodRecord",
    "Resources",
    "UnknownProduct",
    "build_inventory",
    "node_record",
    "pod_record",
    "pod_requests",
    "unschedulable_reasons",
]

log = logging.getLogger(__name__)

CPU, MEMORY, EPHEMERAL_STORAGE = "cpu", "memory", "ephemeral-storage"


class Resources(BaseModel):
    """An amount of node resources in integer base units."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cpu_millicores: int = 0
    memory_bytes: int = 0
    ephemeral_storage_bytes: int = 0
    gpus: dict[str, int] = {}
    """Units per GPU extended resource (nvidia.com/gpu, nvidia.com/mig-1g.10gb, ...)."""


class NodeInventory(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    schedulable: bool = True
    reasons: tuple[str, ...] = ()
    """Why new pods cannot land here: "cordoned", "not ready: ...", "taint k=v:NoSchedule"."""
    arch: str | None = None
    gpus: tuple[GpuGroup, ...] = ()
    pool: str | None = None
    """The node group it belongs to, from the provider's label (:func:`node_pool`)."""
    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None
    """Where it is, from the well-known labels (:mod:`shared.placement.locality`)."""
    backend: str | None = None
    """dstack's name of its cloud, from ``spec.providerID`` (``shared.placement.locality``)."""
    addresses: tuple[str, ...] = ()
    """Its hostname label and ``status.addresses``: what ``instances`` names it by."""
    allocatable: Resources = Resources()
    free: Resources = Resources()

    @property
    def locality(self) -> Locality:
        return Locality(
            instance_type=self.instance_type,
            zone=self.zone,
            region=self.region,
            backend=self.backend,
        )

    def free_units(self, group: GpuGroup) -> int:
        """Units of ``group.resource`` not yet requested by pods on this node."""
        return self.free.gpus.get(group.resource, 0)


class UnknownProduct(BaseModel):
    """A GPU product the catalogue does not know, and where it was seen."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    vendor: GpuVendor
    product: str | None
    """The raw label value; ``None`` when the node has GPUs but no product label."""
    nodes: tuple[str, ...]


class GpuInventory(BaseModel):
    """Every node with its GPUs and free resources, sorted by node name."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    nodes: tuple[NodeInventory, ...] = ()
    unknown_products: tuple[UnknownProduct, ...] = ()

    def node(self, name: str) -> NodeInventory | None:
        return next((n for n in self.nodes if n.name == name), None)

    def to_json(self) -> str:
        """Compact JSON: fields left at their defaults are omitted, and restored on reading."""
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> GpuInventory:
        return cls.model_validate_json(text)


def build_inventory(nodes: Iterable[Any], pods: Iterable[Any]) -> GpuInventory:
    """The inventory of these nodes given the cluster's pods (raw JSON or client objects)."""
    requested: dict[str, dict[str, int]] = {}
    for pod in pods:
        record = pod if isinstance(pod, PodRecord) else pod_record(pod)
        if record is not None and record.node is not None:
            _add_into(requested.setdefault(record.node, {}), record.requests)
    records = (n if isinstance(n, NodeRecord) else node_record(n) for n in nodes)
    statics = {s.name: s for s in records if s is not None}
    return _assemble(_node_inventory(s, requested.get(s.name, {})) for s in statics.values())


@dataclass(frozen=True, slots=True)
class PodRecord:
    """What the inventory keeps of a pod: where it is and what it requests."""

    key: str
    """``namespace/name``."""
    node: str | None
    """The node it occupies; None while unscheduled and once finished (it frees its requests)."""
    requests: Mapping[str, int]
    """Its effective requests (:func:`pod_requests`)."""


def pod_record(pod: Any) -> PodRecord | None:
    """The record of a pod (a view, raw JSON or a client object); None for a nameless one."""
    view = pod_view(pod)
    key = _pod_key(view)
    if key is None:
        return None
    node = _bound_node(view)
    return PodRecord(key=key, node=node, requests=_requests(view) if node is not None else {})


class InventoryBuilder:
    """The inventory kept current from watch events, O(resources of one object) per event.

    Nodes are keyed by name and pods by ``namespace/name``. Each pod's rounded
    requests are remembered, so an update or delete subtracts exactly what its
    earlier version added. Not thread-safe: feed it from one watcher task.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, NodeRecord] = {}
        self._pods: dict[str, tuple[str, Mapping[str, int]]] = {}
        self._requested: dict[str, dict[str, int]] = {}
        # Each node's NodeInventory, dropped when the node or its pods change, so a
        # snapshot rebuilds only those: 1,000 nodes cost ~20 ms rebuilt, ~1 ms cached.
        self._built: dict[str, NodeInventory] = {}

    def reset(self, nodes: Iterable[Any], pods: Iterable[Any]) -> None:
        """Replace everything, as after a relist (watch expired with 410 Gone)."""
        self.replace_nodes(nodes)
        self.replace_pods(pods)

    def replace_nodes(self, nodes: Iterable[Any]) -> None:
        """Replace every node and keep the pods: a relist of nodes alone."""
        self._nodes.clear()
        self._built.clear()
        for node in nodes:
            self.upsert_node(node)

    def replace_pods(self, pods: Iterable[Any]) -> None:
        """Replace every pod and keep the nodes: a relist of pods alone."""
        self._pods.clear()
        self._requested.clear()
        self._built.clear()
        for pod in pods:
            self.upsert_pod(pod)

    # The mutators return whether the inventory changed, so a watcher can skip
    # publishing after the many events that change nothing it counts (status
    # heartbeats, a pod becoming Ready, label edits on a CPU-only pod).

    def upsert_node(self, node: Any) -> bool:
        """Add or update a node: a :class:`NodeRecord`, raw JSON or a client object."""
        static = node if isinstance(node, NodeRecord) else node_record(node)
        if static is None or self._nodes.get(static.name) == static:
            return False
        self._nodes[static.name] = static
        self._built.pop(static.name, None)
        return True

    def delete_node(self, node: Any) -> bool:
        """Forget a node, given the object or its name; its pods' requests stay until they go."""
        if isinstance(node, str):
            name: str | None = node
        elif isinstance(node, NodeRecord):
            name = node.name
        else:
            name = dig(as_raw(node), "metadata", "name")
        if name is None:
            return False
        self._built.pop(name, None)
        return self._nodes.pop(name, None) is not None

    def upsert_pod(self, pod: Any) -> bool:
        """Add or update a pod: a :class:`PodRecord`, raw JSON or a client object."""
        record = pod if isinstance(pod, PodRecord) else pod_record(pod)
        if record is None:
            return False
        key, node_name, requests = record.key, record.node, record.requests
        if node_name is None:
            return self._forget_pod(key)
        if self._pods.get(key) == (node_name, requests):
            return False
        self._forget_pod(key)
        self._pods[key] = (node_name, requests)
        _add_into(self._requested.setdefault(node_name, {}), requests)
        self._built.pop(node_name, None)
        return True

    def delete_pod(self, pod: Any) -> bool:
        """Forget a pod, given its ``namespace/name`` key, its record or the object."""
        if isinstance(pod, str):
            key: str | None = pod
        elif isinstance(pod, PodRecord):
            key = pod.key
        else:
            key = _pod_key(pod_view(pod))
        return key is not None and self._forget_pod(key)

    def snapshot(self) -> GpuInventory:
        nodes = []
        for name, static in self._nodes.items():
            node = self._built.get(name)
            if node is None:
                node = _node_inventory(static, self._requested.get(name, {}))
                self._built[name] = node
            nodes.append(node)
        return _assemble(nodes)

    def _forget_pod(self, key: str) -> bool:
        previous = self._pods.pop(key, None)
        if previous is None:
            return False
        node_name, requests = previous
        self._built.pop(node_name, None)
        # A pod that requests nothing (BestEffort) adds nothing to its node's sums, which
        # may be gone already: the node's other pods went first.
        sums = self._requested.get(node_name)
        if sums is None:
            return True
        for resource, amount in requests.items():
            left = sums[resource] - amount
            if left:
                sums[resource] = left
            else:
                del sums[resource]
        if not sums:
            del self._requested[node_name]
        return True


def pod_requests(pod: Any) -> dict[str, int]:
    """A pod's effective requests as kube-scheduler sums them; CPU in millicores, rest in units."""
    return _requests(pod_view(pod))


def _requests(pod: PodView) -> dict[str, int]:
    spec = pod.spec
    if spec is None:
        return {}
    total: dict[str, Fraction] = {}
    for container in spec.containers or ():
        _add_into(total, _requests_of(container.resources))
    sidecars: dict[str, Fraction] = {}
    init_peak: dict[str, Fraction] = {}
    for container in spec.initContainers or ():
        step = _requests_of(container.resources)
        if container.restartPolicy == "Always":
            # A sidecar keeps running next to the app containers and the later init steps.
            _add_into(total, step)
            _add_into(sidecars, step)
            step = dict(sidecars)
        else:
            _add_into(step, sidecars)
        for resource, amount in step.items():
            init_peak[resource] = max(init_peak.get(resource, Fraction(0)), amount)
    for resource, amount in init_peak.items():
        total[resource] = max(total.get(resource, Fraction(0)), amount)
    # Pod-level requests (KEP-2837) replace the container sum for CPU and memory only.
    for resource, amount in _requests_of(spec.resources).items():
        if resource in (CPU, MEMORY):
            total[resource] = amount
    _add_into(total, _parse_list(spec.overhead))
    return {r: math.ceil(q * 1000) if r == CPU else math.ceil(q) for r, q in total.items() if q}


def unschedulable_reasons(node: Any) -> tuple[str, ...]:
    """Why kube-scheduler would place no new pod here; empty when it would."""
    return _unschedulable_reasons(as_raw(node))


def _unschedulable_reasons(node: Raw) -> tuple[str, ...]:
    reasons: list[str] = []
    if dig(node, "metadata", "deletionTimestamp") is not None:
        reasons.append("being deleted")
    if dig(node, "spec", "unschedulable"):
        reasons.append(_CORDONED)
    conditions = dig(node, "status", "conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None:
        reasons.append(f"{_NOT_READY}: no Ready condition reported")
    elif ready.get("status") != "True":
        why = f" ({ready['reason']})" if ready.get("reason") else ""
        reasons.append(f"{_NOT_READY}: Ready={ready.get('status')}{why}")
    for taint in dig(node, "spec", "taints") or []:
        key, effect = taint.get("key"), taint.get("effect")
        if effect not in ("NoSchedule", "NoExecute") or key in GPU_TAINT_KEYS:
            continue
        covered_by = _TAINTS_COVERED_BY.get(key)
        if covered_by is not None and any(r.startswith(covered_by) for r in reasons):
            continue
        value = f"={taint['value']}" if taint.get("value") else ""
        reasons.append(f"taint {key}{value}:{effect}")
    return tuple(reasons)


_CORDONED = "cordoned"
_NOT_READY = "not ready"
# The node lifecycle controller mirrors cordoning and readiness as taints; the
# condition already said it, so the taint would only repeat it.
_TAINTS_COVERED_BY = {
    "node.kubernetes.io/unschedulable": _CORDONED,
    "node.kubernetes.io/not-ready": _NOT_READY,
    "node.kubernetes.io/unreachable": _NOT_READY,
}
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_N = TypeVar("_N", int, Fraction)


@dataclass(frozen=True)
class NodeRecord:
    """What a node event tells us; combined with the pod sums at snapshot time."""

    name: str
    reasons: tuple[str, ...]
    arch: str | None
    gpus: tuple[GpuGroup, ...]
    allocatable: dict[str, int]
    pool: str | None = None
    locality: Locality = field(default_factory=Locality)
    addresses: tuple[str, ...] = ()


# Where providers name a node's group, first match wins: GKE node pools, EKS managed node
# groups, Karpenter NodePools (v1, then the older provisioner), AKS agent pools, and the
# pools of Berth's local cluster (cli/local/nodes.py).
POOL_LABELS = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
    "karpenter.sh/provisioner-name",
    "kubernetes.azure.com/agentpool",
    "berth.dev/local-pool",
)


def node_pool(labels: Mapping[str, str]) -> str | None:
    """The node's group (pool) name from the first label that names one. Pure."""
    return next((labels[key] for key in POOL_LABELS if labels.get(key)), None)


def node_record(node: Any) -> NodeRecord | None:
    """The record of a node (raw JSON or a client object); None for a nameless one."""
    raw_node = as_raw(node)
    name = dig(raw_node, "metadata", "name")
    if name is None:
        return None
    labels = labels_of(raw_node)
    raw: Mapping[str, str] = dig(raw_node, "status", "allocatable") or {}
    return NodeRecord(
        name=name,
        reasons=_unschedulable_reasons(raw_node),
        arch=dig(raw_node, "status", "nodeInfo", "architecture"),
        gpus=node_gpus(labels, raw).groups,
        pool=node_pool(labels),
        locality=node_locality(labels, dig(raw_node, "spec", "providerID")),
        addresses=_addresses(labels, dig(raw_node, "status", "addresses")),
        allocatable={
            r: math.ceil(q * 1000) if r == CPU else math.ceil(q)
            for r, q in _parse_list(raw).items()
        },
    )


def _addresses(labels: Mapping[str, str], addresses: Any) -> tuple[str, ...]:
    found = [labels.get("kubernetes.io/hostname", "")]
    found += [a.get("address", "") for a in (addresses or ())]
    return tuple(dict.fromkeys(a for a in found if a))


def _assemble(node_inventories: Iterable[NodeInventory]) -> GpuInventory:
    nodes = sorted(node_inventories, key=lambda n: n.name)
    unknown: dict[tuple[GpuVendor, str | None], list[str]] = {}
    for node in nodes:
        for group in node.gpus:
            if not group.known:
                unknown.setdefault((group.vendor, group.product), []).append(node.name)
    return GpuInventory(
        nodes=tuple(nodes),
        unknown_products=tuple(
            UnknownProduct(vendor=vendor, product=product, nodes=tuple(sorted(set(names))))
            for (vendor, product), names in sorted(
                unknown.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
            )
        ),
    )


def _node_inventory(static: NodeRecord, requested: Mapping[str, int]) -> NodeInventory:
    alloc = static.allocatable
    free = {r: max(0, amount - requested.get(r, 0)) for r, amount in alloc.items()}
    return NodeInventory(
        name=static.name,
        schedulable=not static.reasons,
        reasons=static.reasons,
        arch=static.arch,
        gpus=static.gpus,
        pool=static.pool,
        instance_type=static.locality.instance_type,
        zone=static.locality.zone,
        region=static.locality.region,
        backend=static.locality.backend,
        addresses=static.addresses,
        allocatable=_resources(alloc),
        free=_resources(free),
    )


def _resources(amounts: Mapping[str, int]) -> Resources:
    return Resources(
        cpu_millicores=amounts.get(CPU, 0),
        memory_bytes=amounts.get(MEMORY, 0),
        ephemeral_storage_bytes=amounts.get(EPHEMERAL_STORAGE, 0),
        gpus={r: n for r, n in sorted(amounts.items()) if is_gpu_resource(r)},
    )


def _bound_node(pod: PodView) -> str | None:
    """The node a pod occupies, or ``None`` if unscheduled or finished (it frees its requests)."""
    node_name = pod.spec.nodeName if pod.spec else None
    if not node_name or (pod.status and pod.status.phase in _FINISHED_PHASES):
        return None
    return node_name


def _pod_key(pod: PodView) -> str | None:
    meta = pod.metadata
    if meta is None or not meta.name:
        return None
    return f"{meta.namespace or ''}/{meta.name}"


def _requests_of(resources: ResourcesView | None) -> dict[str, Fraction]:
    if resources is None:
        return {}
    # The apiserver copies a limit into the request when the request is absent.
    merged = {**(resources.limits or {}), **(resources.requests or {})}
    return _parse_list(merged)


def _parse_list(quantities: Mapping[str, Any] | None) -> dict[str, Fraction]:
    parsed: dict[str, Fraction] = {}
    for resource, value in (quantities or {}).items():
        if resource not in (CPU, MEMORY, EPHEMERAL_STORAGE) and not is_gpu_resource(resource):
            continue
        try:
            parsed[resource] = parse_quantity(value)
        except QuantityError:
            # The apiserver validates quantities, so this is a hand-made object;
            # skipping one value beats failing the whole inventory.
            log.warning("ignoring unparseable quantity %s=%r", resource, value)
    return parsed


def _add_into(target: dict[str, _N], amounts: Mapping[str, _N]) -> None:
    for resource, amount in amounts.items():
        target[resource] = target[resource] + amount if resource in target else amount
