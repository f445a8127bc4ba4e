"""Fleets: apply, list (with the nodes they cover and what runs there), delete."""

from __future__ import annotations

import time

import yaml
from pydantic import BaseModel

from api.services.names import random_run_name
from shared.clusters import ClusterRegistry
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import configuration_from_stored, parse_fleet_configuration
from shared.configuration.server import KubernetesBackend
from shared.errors import ConflictError, NotFoundError
from shared.gpu.inventory import NodeInventory
from shared.placement import placements
from shared.placement.fleets import fleet_nodes
from shared.placement.offers import nominal_memory_mib
from shared.state.inventory_store import load_inventory
from shared.state.records import Fleet
from shared.state.store import Store


class FleetInstance(BaseModel):
    node: str
    backend: str
    cluster: str = ""
    """The project's name for the node's cluster (its kubeconfig context; ``default``)."""
    gpu: str
    price: str
    status: str
    """``idle``, or ``busy (run-a, run-b)``; ``unschedulable: why`` for cordoned nodes."""


class FleetPublic(BaseModel):
    name: str
    project: str
    nodes: str
    placement: str
    created_at: float
    instances: list[FleetInstance]


def apply_fleet(
    store: Store, clusters: ClusterRegistry, project: str, text: str | dict[str, object]
) -> FleetPublic:
    source = text if isinstance(text, str) else yaml.safe_dump(text)
    conf = parse_fleet_configuration(source)
    name = conf.name or random_run_name()
    existing = store.get_fleet(project, name)
    fleet = Fleet(
        name=name,
        project=project,
        configuration=conf.model_dump(mode="json") | {"name": name},
        created_at=existing.created_at if existing else time.time(),
    )
    store.put_fleet(fleet)
    return describe_fleet(store, clusters, fleet)


def list_fleets(store: Store, clusters: ClusterRegistry, project: str) -> list[FleetPublic]:
    return [describe_fleet(store, clusters, f) for f in store.list_fleets(project)]


def delete_fleet(store: Store, project: str, name: str) -> None:
    if store.get_fleet(project, name) is None:
        raise NotFoundError(f"no fleet named {name!r} in project {project!r}", field="name")
    users = [
        run.name
        for run, _ in placements.active_runs(store)
        if run.project == project and name in (run.configuration.get("fleets") or [])
    ]
    if users:
        raise ConflictError(
            f"fleet {name!r} is used by active runs: {', '.join(sorted(users))}", field="name"
        )
    store.delete_fleet(project, name)


def describe_fleet(store: Store, clusters: ClusterRegistry, fleet: Fleet) -> FleetPublic:
    """The fleet's nodes in every cluster of its project, with what runs on each."""
    conf = configuration_from_stored(fleet.configuration)
    assert isinstance(conf, FleetConfiguration)
    runs_on: dict[tuple[str, str], list[str]] = {}
    for run, jobs in placements.active_runs(store):
        for job in jobs:
            if job.placement is not None and job.status in placements.HOLDING:
                where = (clusters.name_of(job), job.placement.node)
                runs_on.setdefault(where, []).append(run.name)
    instances = []
    for name in clusters.names_of(fleet.project):
        backend = clusters.server.backend_for(fleet.project, name)
        inventory = load_inventory(store, clusters, fleet.project, name)
        for node in fleet_nodes(inventory, conf):
            busy = sorted(set(runs_on.get((name, node.name), [])))
            instances.append(_instance(node, backend, busy))
    return FleetPublic(
        name=fleet.name,
        project=fleet.project,
        nodes=str(conf.nodes),
        placement=conf.placement,
        created_at=fleet.created_at,
        instances=instances,
    )


def _instance(node: NodeInventory, backend: KubernetesBackend, busy: list[str]) -> FleetInstance:
    group = node.gpus[0] if node.gpus else None
    gpu = "-"
    price = "-"
    if group is not None:
        mem = nominal_memory_mib(group)
        label = group.name or group.product or "?"
        gpu = f"{label}:{mem // 1024 if mem else '?'}GB:{group.count}"
        unit = (backend.gpu_prices or {}).get(label)
        price = f"${unit * group.count:.2f}/h" if unit is not None else "-"
    status = "busy (" + ", ".join(busy) + ")" if busy else "idle"
    if not node.schedulable:
        status = "unschedulable: " + "; ".join(node.reasons)
    return FleetInstance(
        node=node.name,
        backend=f"kubernetes/{backend.namespace}",
        cluster=backend.cluster_name(),
        gpu=gpu,
        price=price,
        status=status,
    )
