"""Where a node is: its cloud, instance type, zone and region, and runs that ask for some.

dstack's ``instance_types``, ``availability_zones`` and ``regions`` choose cloud
machines. On Kubernetes the same facts are node labels every managed cluster
sets (GKE, EKS, AKS, and the cloud-controller-manager of any cloud): the
well-known ``node.kubernetes.io/instance-type``, ``topology.kubernetes.io/zone``
and ``topology.kubernetes.io/region``, or their older ``beta``/``failure-domain``
spellings on old nodes. So a run (or fleet) naming them is placed only on nodes
whose labels say so: by Berth's own placement when it reads nodes, by node
affinity when the kube-scheduler places (namespace-only mode). A node without
the label is never taken for a run that asks: nothing says where it is.

dstack's ``backends`` chooses clouds. A Kubernetes node says which cloud runs it
in ``spec.providerID`` (``gce://...``, ``aws:///...``, ``azure:///...``), written
by its cloud's controller; :func:`node_backend` maps the scheme to dstack's
backend name (a scheme dstack has no other name for is its own name:
``nebius://`` is ``nebius``), and falls back to the node group labels GKE, EKS
and AKS set. ``kubernetes`` names the cluster itself: a list holding it allows
every node. In namespace-only mode no node is read, so only the clouds with a
node label of their own can be asked for (:meth:`Where.backend_terms`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
ZONE = "topology.kubernetes.io/zone"
REGION = "topology.kubernetes.io/region"

# The GA label first, then the spelling nodes carried before it (Kubernetes 1.17).
_LABELS: dict[str, tuple[str, ...]] = {
    INSTANCE_TYPE: (INSTANCE_TYPE, "beta.kubernetes.io/instance-type"),
    ZONE: (ZONE, "failure-domain.beta.kubernetes.io/zone"),
    REGION: (REGION, "failure-domain.beta.kubernetes.io/region"),
}
_WORDS = {INSTANCE_TYPE: "instance type", ZONE: "zone", REGION: "region"}

KUBERNETES = "kubernetes"
"""dstack's backend name for a Kubernetes cluster: on Berth, every node of it."""
# providerID schemes whose dstack backend has another name; any other scheme is its own
# (aws, azure, oci, digitalocean, ...).
_SCHEME_BACKENDS = {"gce": "gcp"}
# Labels only one cloud's managed node groups carry: the fallback when a node has no
# providerID, and the only way to ask for a cloud where nodes cannot be read.
BACKEND_LABELS = {
    "gcp": "cloud.google.com/gke-nodepool",
    "aws": "eks.amazonaws.com/nodegroup",
    "azure": "kubernetes.azure.com/cluster",
}


@dataclass(frozen=True)
class Locality:
    """What a node's labels say of where it is; None for what they do not say."""

    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None
    backend: str | None = None
    """dstack's name of the cloud that runs the node (:func:`node_backend`)."""


@dataclass(frozen=True)
class Where:
    """The instance types, zones, regions and clouds a run accepts; empty means any."""

    instance_types: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    backends: frozenset[str] = frozenset()
    """Never holds ``kubernetes``: a list naming it allows every node (:func:`where_of`)."""

    def allows(self, node: Locality) -> bool:
        return all(not wanted or value in wanted for value, wanted in self._pairs(node))

    def backend_terms(self) -> list[list[dict[str, Any]]]:
        """Node affinity alternatives (ORed terms) for ``backends`` without reading nodes;
        ``[[]]`` when any node will do. ValueError naming a cloud with no label of its own."""
        if not self.backends:
            return [[]]
        unlabelled = sorted(self.backends - BACKEND_LABELS.keys())
        if unlabelled:
            raise ValueError(
                f"backends: {', '.join(unlabelled)} can be told apart only by the nodes'"
                " providerID, and this project may not read nodes; name"
                f" {', '.join(sorted(BACKEND_LABELS))} or {KUBERNETES}"
            )
        return [
            [{"key": BACKEND_LABELS[name], "operator": "Exists"}] for name in sorted(self.backends)
        ]

    def describe(self) -> str:
        """``instance type a3-megagpu-8g, zone us-central1-a or us-central1-b``."""
        said = [
            f"{_WORDS[label]} {' or '.join(sorted(values))}"
            for label, values in self._wanted()
            if values
        ]
        if self.backends:
            said.append(f"backend {' or '.join(sorted(self.backends))}")
        return ", ".join(said)

    def match_expressions(self) -> list[dict[str, Any]]:
        """Node affinity requirements (ANDed inside one term) on the GA labels."""
        return [
            {"key": label, "operator": "In", "values": sorted(values)}
            for label, values in self._wanted()
            if values
        ]

    def _wanted(self) -> tuple[tuple[str, frozenset[str]], ...]:
        return (
            (INSTANCE_TYPE, self.instance_types),
            (ZONE, self.zones),
            (REGION, self.regions),
        )

    def _pairs(self, node: Locality) -> tuple[tuple[str | None, frozenset[str]], ...]:
        return (
            (node.instance_type, self.instance_types),
            (node.zone, self.zones),
            (node.region, self.regions),
            (node.backend, self.backends),
        )


def where_of(conf: Any) -> Where | None:
    """The configuration's ``instance_types``, ``availability_zones``, ``regions`` and
    ``backends``; None when it names none of them."""
    backends = _values(getattr(conf, "backends", None))
    where = Where(
        instance_types=_values(getattr(conf, "instance_types", None)),
        zones=_values(getattr(conf, "availability_zones", None)),
        regions=_values(getattr(conf, "regions", None)),
        backends=frozenset() if KUBERNETES in backends else backends,
    )
    return where if where != Where() else None


def node_locality(labels: Mapping[str, str], provider_id: str | None = None) -> Locality:
    """A node's instance type, zone, region (labels) and cloud. Pure."""
    return Locality(
        instance_type=_label(labels, INSTANCE_TYPE),
        zone=_label(labels, ZONE),
        region=_label(labels, REGION),
        backend=node_backend(labels, provider_id),
    )


def node_backend(labels: Mapping[str, str], provider_id: str | None) -> str | None:
    """dstack's name of the node's cloud: the providerID's scheme, else a managed node
    group's label; None for a node nothing says runs on a cloud (bare metal, KWOK)."""
    scheme, sep, _ = (provider_id or "").partition("://")
    if sep and scheme:
        return _SCHEME_BACKENDS.get(scheme.lower(), scheme.lower())
    if (provider_id or "").startswith("ocid1."):  # OCI writes the instance's OCID bare
        return "oci"
    return next((name for name, key in BACKEND_LABELS.items() if key in labels), None)


def _label(labels: Mapping[str, str], key: str) -> str | None:
    return next((labels[k] for k in _LABELS[key] if labels.get(k)), None)


def _values(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(values or ())
