"""Volumes of a run: which claims it mounts, and which nodes those claims let it use.

Pure functions. A ReadWriteOnce claim can be mounted read-write by one node at
a time: once a pod on node N uses it, every other run that mounts it must go to
N too, or its pod would hang in ContainerCreating with a Multi-Attach error
that the kube-scheduler does not foresee. A PersistentVolume with node
affinity (local disks, zonal disks) restricts every run that mounts it, in use
or not. The scheduler intersects what these allow with the run's other limits
(fleets) through :func:`allowed_nodes_for_volumes`; the facts come from the
cluster (``workers.volumes.claim_states``) and from Berth's own placements,
which exist before their pods do (:func:`berth_volume_nodes`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.configuration.fields import VolumeMount
from shared.configuration.interpolation import has_node_rank, with_node_rank
from shared.configuration.volumes import READ_WRITE_ONCE, READ_WRITE_ONCE_POD
from shared.placement.placements import HOLDING
from shared.state.records import Job, Run

_SINGLE_NODE_MODES = frozenset({READ_WRITE_ONCE, READ_WRITE_ONCE_POD})
_NAME_MAX = 63  # claim names are DNS subdomains, but label-sized names read better in lists


@dataclass(frozen=True)
class ClaimState:
    """What the cluster says about one mounted volume's claim, as node names."""

    volume: str
    claim: str
    access_modes: frozenset[str]
    """The bound volume's modes (the claim's request until it binds)."""
    pinned_nodes: frozenset[str] | None = None
    """Nodes the PersistentVolume's node affinity allows; None: any node."""
    used_on: frozenset[str] = frozenset()
    """Nodes where a pod mounting the claim runs, or where Berth placed one."""
    pods: int = 0
    """Pods using the claim now (for ReadWriteOncePod, which allows one)."""


def berth_claim_name(project: str, volume: str) -> str:
    """The name of the claim Berth creates for ``volume``: deterministic, a DNS label."""
    raw = f"berth-{project}-vol-{volume}"
    name = re.sub(r"[^a-z0-9-]", "-", raw.lower()).strip("-")
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: _NAME_MAX - 9].rstrip('-')}-{digest}"


def mounted_volumes(configuration: Mapping[str, Any]) -> list[str]:
    """Names of the project volumes a stored run configuration mounts, in order.

    A name with ``${{ dstack.node_rank }}`` stands for one volume per node of the task.
    """
    volumes = configuration.get("volumes")
    if not volumes:
        return []  # most runs: a scheduling pass asks this of every waiting run, every pass
    nodes = configuration.get("nodes") if configuration.get("type") == "task" else 1
    names: list[str] = []
    for item in volumes:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            continue
        ranks = range(nodes if isinstance(nodes, int) and has_node_rank(name) else 1)
        for rank in ranks:
            named = with_node_rank(name, rank)
            if named not in names:
                names.append(named)
    return names


def volume_names(conf: Any) -> list[str]:
    """Names of the project volumes a run configuration mounts, each node's for a
    ``${{ dstack.node_rank }}`` name, in order."""
    nodes = int(getattr(conf, "nodes", 1) or 1) if getattr(conf, "type", "") == "task" else 1
    names: list[str] = []
    for mount in getattr(conf, "volumes", None) or []:
        for rank in range(nodes if mount.per_node else 1):
            name = mount.name_for(rank)
            if name is not None and name not in names:
                names.append(name)
    return names


def usable_mounts(mounts: Sequence[VolumeMount], *, allow_host_volumes: bool) -> list[VolumeMount]:
    """The mounts a pod gets: optional node directories drop out where hostPath is off."""
    return [m for m in mounts if allow_host_volumes or not (m.is_instance and m.optional)]


def host_volume_refusal(mounts: Sequence[VolumeMount], *, allow_host_volumes: bool) -> str | None:
    """Why the run may not mount node directories here, or None."""
    if allow_host_volumes:
        return None
    refused = [m for m in mounts if m.is_instance and not m.optional]
    if not refused:
        return None
    paths = ", ".join(f"{m.instance_path}:{m.path}" for m in refused)
    return (
        f"instance volumes (node directories) are not allowed in this project: {paths}."
        " Mount a volume (berth volume apply) instead, mark the mount optional: true to run"
        " without it, or ask the operator to set allow_host_volumes: true on the backend"
    )


def berth_volume_nodes(
    runs: Iterable[tuple[Run, list[Job]]],
) -> dict[tuple[str, str], frozenset[str]]:
    """Per ``(project, volume)``, the nodes of Berth's jobs that hold a pod mounting it.

    Placements count from the moment they are written, before their pods exist,
    so two runs placed in one pass cannot split a ReadWriteOnce claim.
    """
    nodes: dict[tuple[str, str], set[str]] = {}
    for run, jobs in runs:
        names = mounted_volumes(run.configuration)
        if not names:
            continue
        held = {j.placement.node for j in jobs if j.status in HOLDING and j.placement}
        for name in names:
            nodes.setdefault((run.project, name), set()).update(held)
    return {key: frozenset(value) for key, value in nodes.items()}


def allowed_nodes_for_volumes(claims: Iterable[ClaimState]) -> frozenset[str] | None:
    """The nodes a run mounting ``claims`` may use; None when the volumes do not restrict it.

    An empty set means no node can take it now (two single-node claims in use on
    different nodes, a ReadWriteOncePod claim in use, disjoint node affinities).
    """
    allowed: frozenset[str] | None = None
    for claim in claims:
        nodes = _nodes_for(claim)
        if nodes is not None:
            allowed = nodes if allowed is None else allowed & nodes
    return allowed


def describe_volume_limits(claims: Iterable[ClaimState]) -> str:
    """Why the volumes restrict the run, for its ``pending``/``failed`` reason."""
    parts = []
    for claim in claims:
        modes = ",".join(sorted(claim.access_modes)) or "unknown access mode"
        if _single_node(claim) and claim.used_on:
            where = ", ".join(sorted(claim.used_on))
            parts.append(f"volume {claim.volume} ({modes}) is in use on {where}")
        if claim.pinned_nodes is not None:
            where = ", ".join(sorted(claim.pinned_nodes)) or "no node"
            parts.append(f"volume {claim.volume}'s PersistentVolume is bound to {where}")
    return "; ".join(parts) or "the volumes do not restrict placement"


def _nodes_for(claim: ClaimState) -> frozenset[str] | None:
    nodes: frozenset[str] | None = None
    if _single_node(claim):
        if READ_WRITE_ONCE_POD in claim.access_modes and claim.pods:
            return frozenset()
        if claim.used_on:
            nodes = claim.used_on
    if claim.pinned_nodes is not None:
        nodes = claim.pinned_nodes if nodes is None else nodes & claim.pinned_nodes
    return nodes


def could_split(claim: ClaimState) -> bool:
    """Whether two runs placed in one pass could land on different nodes with ``claim``.

    A single-node claim nobody uses yet, on a volume more than one node may
    attach: nothing pins the first run's node until its placement is written,
    so a second run mounting it must wait for the next pass.
    """
    if not _single_node(claim) or claim.used_on:
        return False
    return claim.pinned_nodes is None or len(claim.pinned_nodes) > 1


def _single_node(claim: ClaimState) -> bool:
    return bool(claim.access_modes) and claim.access_modes <= _SINGLE_NODE_MODES


def nodes_matching(
    nodes: Mapping[str, Mapping[str, str]], terms: Sequence[Mapping[str, Any]]
) -> frozenset[str]:
    """Names of ``nodes`` (name -> labels) that satisfy any of the node selector ``terms``.

    ``terms`` are core/v1 NodeSelectorTerms as JSON (``matchExpressions`` and
    ``matchFields``), the shape of a PersistentVolume's required node affinity.
    """
    return frozenset(
        name for name, labels in nodes.items() if any(_term(name, labels, t) for t in terms)
    )


def _term(name: str, labels: Mapping[str, str], term: Mapping[str, Any]) -> bool:
    exprs = list(term.get("matchExpressions") or [])
    fields = list(term.get("matchFields") or [])
    if not exprs and not fields:
        return False  # Kubernetes: an empty term matches no node
    field_values = {"metadata.name": name}
    return all(_requirement(labels, e) for e in exprs) and all(
        _requirement(field_values, f) for f in fields
    )


def _requirement(values: Mapping[str, str], req: Mapping[str, Any]) -> bool:
    key, op = req.get("key", ""), req.get("operator", "")
    wanted = [str(v) for v in req.get("values") or []]
    have = values.get(key)
    if op == "In":
        return have is not None and have in wanted
    if op == "NotIn":
        return have is None or have not in wanted
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt") and have is not None and wanted:
        try:
            a, b = int(have), int(wanted[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False
