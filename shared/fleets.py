"""Fleets on Kubernetes: a named set of existing nodes chosen by their hardware.

Berth does not create nodes; a fleet selects the nodes whose GPUs, CPU and
memory fit its ``resources`` (up to ``nodes.max`` of them), and runs that name
the fleet are placed only there.
"""

from __future__ import annotations

from shared.blocks import Blocks
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError
from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.locality import where_of
from shared.offers import fits
from shared.requests import request_from_resources
from shared.store import Store


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
