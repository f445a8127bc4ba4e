"""Fleet configurations (``type: fleet``): how much of the cluster a project may hold.

On Kubernetes a fleet provisions no machines; its ``nodes`` range bounds how many
nodes its runs may occupy at once, ``placement: cluster`` asks for nodes that can
talk to each other fast enough for multi-node jobs, and ``resources`` is the shape
of one node it accepts. ``backends`` names clouds the fleet's nodes run on
(:mod:`shared.placement.locality`); a name dstack does not know is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from shared.configuration.base import BerthModel, field_error
from shared.configuration.fields import (
    Backends,
    NodeLabelValues,
    ResourceName,
    SpotPolicy,
    parse_duration,
)
from shared.configuration.ranges import Range, parse_count_range
from shared.configuration.resources import ResourcesSpec

# dstack fleet keys Berth refuses. Source: dstack's fleet models
# (src/dstack/_internal/core/models/fleets.py).
FLEET_FIELDS_NOT_SUPPORTED = frozenset(
    {
        "backend_options",
        "env",
        "max_price",
        "reservation",
        "retry",
        "ssh_config",
        "tags",
    }
)
FLEET_REFUSAL_REASONS: dict[str, str] = {
    "ssh_config": "a Kubernetes cluster's machines join it as nodes, not over SSH: join the"
    " hosts to the cluster (kubelet), then choose them by resources or with instances",
    "env": "dstack sets it on the hosts of an SSH fleet, and Berth's fleets are nodes the"
    " cluster already runs: set env on the runs",
    "reservation": "Kubernetes nodes exist already; a cloud capacity reservation is the"
    " node pool's (its autoscaler's) to use",
    "max_price": "Berth provisions no machines, so there is no price to cap",
}
"""Why a refused fleet key has no meaning on Kubernetes, said with the refusal."""


def _idle_duration_from_yaml(value: Any) -> Any:
    # dstack: a duration, or off / -1 for never terminating idle instances.
    if value is None:
        return None
    if value is False or value == "off" or value == -1:
        return "off"
    return parse_duration(value)


class FleetNodes(Range[int]):
    """A fleet's ``nodes``: a count range and dstack's ``target``, how many nodes the
    fleet holds when it is created. dstack provisions that many; Berth's nodes exist
    already, so it keeps that many of the fleet's autoscaled nodes from scale-down
    from the start (:mod:`workers.fleet_warmth`; without ``target``, all of them)."""

    target: int | None = Field(None, ge=0, strict=True)

    @model_validator(mode="after")
    def _target_within_the_range(self) -> Self:
        if self.target is not None and not self.contains(self.target):
            raise field_error(
                "target",
                f"target {self.target} is outside nodes {self}: it must lie between min and max",
            )
        return self


def _fleet_nodes_from_yaml(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_count_range(value).model_dump()
    return value


NodeCount = Annotated[FleetNodes, BeforeValidator(_fleet_nodes_from_yaml)]

IdleDuration = Annotated[int | Literal["off"] | None, BeforeValidator(_idle_duration_from_yaml)]


def _blocks_from_yaml(value: Any) -> Any:
    if value is None or value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected a number of blocks (1 or more) or auto, got {value!r}")


class FleetConfiguration(BerthModel):
    """A named pool: how many nodes, placed how, of what shape."""

    dstack_only_fields = FLEET_FIELDS_NOT_SUPPORTED
    refusal_reasons = FLEET_REFUSAL_REASONS

    type: Literal["fleet"] = "fleet"
    name: ResourceName | None = None
    nodes: NodeCount
    """``2`` (exactly), ``0..`` (as many as runs need), ``1..4``, or {min, target, max}."""
    placement: Literal["any", "cluster"] = "any"
    backends: Backends = None
    resources: ResourcesSpec = ResourcesSpec()
    spot_policy: SpotPolicy | None = None
    """Accepted for dstack compatibility; meaningless on Kubernetes."""
    instance_types: NodeLabelValues = None
    availability_zones: NodeLabelValues = None
    regions: NodeLabelValues = None
    """Only nodes whose well-known labels name one of these (``shared.placement.locality``)."""
    idle_duration: IdleDuration = None
    """How long an idle node of the fleet in an autoscaling pool is kept from the
    autoscaler's scale-down (``workers.fleet_warmth``): seconds, ``"off"`` (always),
    or None (not at all: the autoscaler's own settings decide)."""
    blocks: Annotated[int | Literal["auto"] | None, BeforeValidator(_blocks_from_yaml)] = None
    """Split each node into this many equal blocks (``auto``: one per GPU); a run on
    the fleet takes whole blocks (``shared.placement.blocks``). None: each run takes what it
    asks, sharing nodes by requests as Kubernetes does."""
