"""Fleets on Kubernetes: a named set of existing nodes chosen by their hardware.

Berth does not create nodes; a fleet selects the nodes whose GPUs, CPU and
memory fit its ``resources`` (up to ``nodes.max`` of them), and runs that name
the fleet are placed only there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.configuration.fields import InstanceRef
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError
from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.placement.blocks import Blocks
from shared.placement.locality import where_of
from shared.placement.offers import fits
from shared.placement.requests import request_from_resources
from shared.state.store import Store


def fleet_nodes(inventory: GpuInventory, conf: FleetConfiguration) -> list[NodeInventory]:
    """The nodes a fleet covers, in name order."""
    request = request_from_resources(conf.resources, where=where_of(conf))
    chosen = [n for n in inventory.nodes if fits(n, request, n.allocatable)]
    limit = conf.nodes.max
    return chosen[:limit] if limit is not None else chosen


def allowed_nodes(
    store: Store, inventory: GpuInventory, project: str, fleets: list[str]
) -> frozenset[str]:
    """The union of the named fleets' nodes; ConfigError for a fleet that does not exist."""
    allowed: set[str] = set()
    for name in fleets:
        fleet = store.get_fleet(project, name)
        if fleet is None:
            raise ConfigError(f"no fleet named {name!r} in project {project!r}", field="fleets")
        conf = configuration_from_stored(fleet.configuration)
        if not isinstance(conf, FleetConfiguration):
            raise ConfigError(f"stored fleet {name!r} is not a fleet configuration", field="fleets")
        allowed |= {n.name for n in fleet_nodes(inventory, conf)}
    return frozenset(allowed)


def instance_nodes(
    store: Store, inventory: GpuInventory, project: str, refs: Sequence[InstanceRef]
) -> frozenset[str]:
    """The nodes dstack's ``instances`` name; ConfigError naming the first that names none."""
    fleets: dict[str, list[str]] = {}
    for name in {r.fleet for r in refs if r.fleet} | {_fleet_part(r.name) for r in refs}:
        fleet = store.get_fleet(project, name) if name else None
        conf = configuration_from_stored(fleet.configuration) if fleet is not None else None
        if isinstance(conf, FleetConfiguration):
            fleets[name] = [n.name for n in fleet_nodes(inventory, conf)]
    return resolve_instances(refs, inventory, fleets)


def resolve_instances(
    refs: Sequence[InstanceRef], inventory: GpuInventory, fleets: Mapping[str, Sequence[str]]
) -> frozenset[str]:
    """Pure: each ref's node, given each named fleet's nodes in order (its instances)."""
    found: set[str] = set()
    for index, ref in enumerate(refs):
        node = _resolve(ref, inventory, fleets)
        if node is None:
            raise ConfigError(
                f"no node is {ref}; Berth does not provision one",
                field=f"instances.{index}",
            )
        found.add(node)
    return frozenset(found)


def _resolve(
    ref: InstanceRef, inventory: GpuInventory, fleets: Mapping[str, Sequence[str]]
) -> str | None:
    if ref.fleet is not None and ref.instance is not None:
        members = fleets.get(ref.fleet, ())
        return members[ref.instance] if ref.instance < len(members) else None
    if ref.hostname is not None:
        return next((n.name for n in inventory.nodes if ref.hostname in n.addresses), None)
    if ref.name is not None and inventory.node(ref.name) is not None:
        return ref.name
    fleet, _, number = (ref.name or "").rpartition("-")
    if fleet in fleets and number.isdigit():
        return _resolve(InstanceRef(fleet=fleet, instance=int(number)), inventory, fleets)
    return None


def _fleet_part(name: str | None) -> str:
    """``my-fleet`` of ``my-fleet-3``: the fleet an instance name may belong to."""
    fleet, _, number = (name or "").rpartition("-")
    return fleet if number.isdigit() else ""


def fleet_blocks(store: Store, project: str, fleets: list[str]) -> Blocks | None:
    """The ``blocks`` the named fleets split their nodes into; ConfigError if they differ.

    A run may name several fleets, but its jobs are sized in one way: fleets that
    split nodes differently cannot be mixed (dstack sizes per instance, which a
    queued run's single request cannot say).
    """
    found: set[Blocks | None] = set()
    for name in fleets:
        fleet = store.get_fleet(project, name)
        if fleet is not None:
            found.add(fleet.configuration.get("blocks"))
    if len(found) > 1:
        raise ConfigError(
            f"fleets {', '.join(fleets)} split nodes into different blocks"
            f" ({', '.join(sorted(str(b) for b in found))}): name fleets of one kind",
            field="fleets",
        )
    return next(iter(found), None)
