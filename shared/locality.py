"""Where a node is: its instance type, zone and region, and runs that ask for some.

dstack's ``instance_types``, ``availability_zones`` and ``regions`` choose cloud
machines. On Kubernetes the same facts are node labels every managed cluster
sets (GKE, EKS, AKS, and the cloud-controller-manager of any cloud): the
well-known ``node.kubernetes.io/instance-type``, ``topology.kubernetes.io/zone``
and ``topology.kubernetes.io/region``, or their older ``beta``/``failure-domain``
spellings on old nodes. So a run (or fleet) naming them is placed only on nodes
whose labels say so: by Berth's own placement when it reads nodes, by node
affinity when the kube-scheduler places (namespace-only mode). A node without
the label is never taken for a run that asks: nothing says where it is.
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


@dataclass(frozen=True)
class Locality:
    """What a node's labels say of where it is; None for what they do not say."""

    instance_type: str | None = None
    zone: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Where:
    """The instance types, zones and regions a run accepts; empty means any."""

    instance_types: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()

    def allows(self, node: Locality) -> bool:
        return all(not wanted or value in wanted for value, wanted in self._pairs(node))

    def describe(self) -> str:
        """``instance type a3-megagpu-8g, zone us-central1-a or us-central1-b``."""
        return ", ".join(
            f"{_WORDS[label]} {' or '.join(sorted(values))}"
            for label, values in self._wanted()
            if values
        )

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
        )


def where_of(conf: Any) -> Where | None:
    """The configuration's ``instance_types``, ``availability_zones`` and ``regions``;
    None when it names none of them."""
    where = Where(
        instance_types=_values(getattr(conf, "instance_types", None)),
        zones=_values(getattr(conf, "availability_zones", None)),
        regions=_values(getattr(conf, "regions", None)),
    )
    return where if where != Where() else None


def node_locality(labels: Mapping[str, str]) -> Locality:
    """A node's instance type, zone and region from its labels. Pure."""
    return Locality(
        instance_type=_label(labels, INSTANCE_TYPE),
        zone=_label(labels, ZONE),
        region=_label(labels, REGION),
    )


def _label(labels: Mapping[str, str], key: str) -> str | None:
    return next((labels[k] for k in _LABELS[key] if labels.get(k)), None)


def _values(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(values or ())
