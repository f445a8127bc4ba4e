"""Fleet configurations (``type: fleet``): how much of the cluster a project may hold.

On Kubernetes a fleet provisions no machines; its ``nodes`` range bounds how many
nodes its runs may occupy at once, ``placement: cluster`` asks for nodes that can
talk to each other fast enough for multi-node jobs, and ``resources`` is the shape
of one node it accepts. Berth has one backend type, so ``backends`` may only name it;
another dstack backend is "not supported yet", a name dstack does not know is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, field_validator

from shared.configuration.base import BerthModel, not_supported
from shared.configuration.fields import (
    NodeLabelValues,
    ResourceName,
    SpotPolicy,
    parse_duration,
)
from shared.configuration.ranges import CountRange
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
FLEET_REFUSAL_REASONS: dict[str, str] = {}
"""Why a refused fleet key has no meaning on Kubernetes, said with the refusal."""
# dstack's backend names: BackendType in src/dstack/_internal/core/models/backends/base.py
# (dstackai/dstack at 511c318c, August 2026).
DSTACK_BACKENDS = frozenset(
    {
        "amddevcloud",
        "aws",
        "azure",
        "cloudrift",
        "crusoe",
        "cudo",
        "datacrunch",
        "digitalocean",
        "dstack",
        "gcp",
        "hotaisle",
        "jarvislabs",
        "kubernetes",
        "lambda",
        "nebius",
        "oci",
        "remote",
        "runpod",
        "slurm",
        "tensordock",
        "vastai",
        "verda",
        "vultr",
    }
)


def _idle_duration_from_yaml(value: Any) -> Any:
    # dstack: a duration, or off / -1 for never terminating idle instances.
    if value is None:
        return None
    if value is False or value == "off" or value == -1:
        return "off"
    return parse_duration(value)


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
    nodes: CountRange
    """``2`` (exactly), ``0..`` (as many as runs need), ``1..4``."""
    placement: Literal["any", "cluster"] = "any"
    backends: list[Literal["kubernetes"]] | None = None
    resources: ResourcesSpec = ResourcesSpec()
    spot_policy: SpotPolicy | None = None
    """Accepted for dstack compatibility; meaningless on Kubernetes."""
    instance_types: NodeLabelValues = None
    availability_zones: NodeLabelValues = None
    regions: NodeLabelValues = None
    """Only nodes whose well-known labels name one of these (``shared.locality``)."""
    idle_duration: IdleDuration = None
    """How long an idle node of the fleet in an autoscaling pool is kept from the
    autoscaler's scale-down (``workers.fleet_warmth``): seconds, ``"off"`` (always),
    or None (not at all: the autoscaler's own settings decide)."""
    blocks: Annotated[int | Literal["auto"] | None, BeforeValidator(_blocks_from_yaml)] = None
    """Split each node into this many equal blocks (``auto``: one per GPU); a run on
    the fleet takes whole blocks (``shared.blocks``). None: each run takes what it
    asks, sharing nodes by requests as Kubernetes does."""

    @field_validator("nodes", mode="before")
    @classmethod
    def _no_target(cls, value: Any) -> Any:
        if isinstance(value, dict) and "target" in value:
            raise not_supported("target")
        return value

    @field_validator("backends", mode="before")
    @classmethod
    def _other_dstack_backends_not_supported(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, name in enumerate(value):
                if isinstance(name, str) and name in DSTACK_BACKENDS and name != "kubernetes":
                    raise not_supported(str(index), value=name)
        return value

    @field_validator("backends")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list allows no backend; omit it or write [kubernetes]")
        return value
