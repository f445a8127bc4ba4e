"""Groups: a task's node groups and a service's replica groups, as dstack has them.

A task with ``groups`` runs each group's ``commands`` and ``ports`` on that
group's ``nodes``; together they are one multi-node task, one gang, whose ranks
run through the groups in order (group 0's first node is rank 0, the master).
A service with ``groups`` (dstack's legacy spelling: ``replicas`` as a list) runs
each group's replicas with the group's commands, image and scaling rules.

**One ``resources`` for all groups.** Berth's queue places every job of a run
with one request (``shared.queueing``: ``QueuedRun.request``), so groups asking
for different resources are refused as not supported yet, naming the group; the
groups' common ``resources`` becomes the run's, which every run-wide reader
(placement, quotas, the plan) then sees as it would for a run without groups.
``nodes`` of a task and ``replicas`` of a service become the groups' totals alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from shared.configuration.base import BerthModel, field_error, not_supported
from shared.configuration.fields import PortMappingField, Python, Scaling, SpotPolicy
from shared.configuration.interpolation import node_ip_problem
from shared.configuration.ranges import CountRange, Range
from shared.configuration.resources import ResourcesSpec

_NAME_RE = r"^[a-z0-9][a-z0-9-]{0,39}$"  # dstack's is_valid_replica_group_name


class NodeGroup(BerthModel):
    """Nodes of a task that share commands and ports (dstack's ``NodeGroup``)."""

    name: str | None = Field(None, pattern=_NAME_RE)
    """Defaults to the group's position: ``0``, ``1``, ..."""
    nodes: int = Field(1, ge=1, strict=True)
    resources: ResourcesSpec = ResourcesSpec()
    """Not inherited from the task's top level (dstack's rule)."""
    commands: list[str] = Field(default_factory=list)
    ports: list[PortMappingField] = Field(default_factory=list)


class ReplicaGroup(BerthModel):
    """Replicas of a service that share commands, image and scaling (dstack's ``ReplicaGroup``)."""

    dstack_only_fields = frozenset({"docker", "reservation", "router"})
    refusal_reasons = {
        "router": "Berth sends the service's requests to every replica and registers"
        " none with an SGLang or Dynamo router"
    }

    name: str | None = Field(None, pattern=_NAME_RE)
    """Defaults to the group's position: ``0``, ``1``, ..."""
    replicas: CountRange
    """A count, or ``min..max`` with ``scaling`` (dstack also spells it ``count``)."""
    scaling: Scaling | None = None
    resources: ResourcesSpec = ResourcesSpec()
    spot_policy: SpotPolicy | None = None
    """Accepted for dstack compatibility; meaningless on Kubernetes."""
    commands: list[str] = Field(default_factory=list)
    image: str | None = Field(None, min_length=1)
    python: Python | None = None
    nvcc: bool | None = None
    privileged: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _count_is_replicas(cls, data: Any) -> Any:
        if isinstance(data, dict) and "count" in data:
            data = dict(data)
            count = data.pop("count")
            data.setdefault("replicas", count)  # dstack: `replicas` wins over `count`
        return data

    @field_validator("replicas")
    @classmethod
    def _bounded(cls, value: Range[int]) -> Range[int]:
        if value.max is None:
            raise ValueError(f"needs an upper bound such as 1..4, got {value}")
        if value.min is None:
            return Range[int](min=0, max=value.max)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.image is not None and self.python is not None:
            raise field_error("python", "image and python are mutually exclusive: set one")
        if self.image is not None and self.nvcc:
            raise field_error("nvcc", "image and nvcc are mutually exclusive: set one")
        if self.replicas.min != self.replicas.max and self.scaling is None:
            raise field_error(
                "replicas", f"a range ({self.replicas}) needs scaling rules in `scaling` too"
            )
        if self.replicas.min == self.replicas.max and self.scaling is not None:
            raise field_error("scaling", "needs replicas set to a range such as 1..4")
        return self


def check_node_groups(conf: Any) -> None:
    """dstack's rules for a task with ``groups``; fills names and the run-wide fields.

    Called from the task's model validator, so errors are raised as pydantic errors.
    """
    groups: list[NodeGroup] = conf.groups
    _name_groups(groups, what="node")
    if "nodes" in conf.model_fields_set and conf.nodes != sum(g.nodes for g in groups):
        raise field_error("nodes", "nodes and groups are mutually exclusive: each group sets nodes")
    for field in ("commands", "ports", "entrypoint"):
        if getattr(conf, field):
            raise field_error(field, f"with groups, set {field} in each group instead")
    sizes = [g.nodes for g in groups]
    for index, group in enumerate(groups):
        if not group.commands and conf.image is None:
            raise field_error(
                f"groups.{index}.commands",
                "either commands in the group or image at the task level must be set",
            )
        for command in group.commands:
            problem = node_ip_problem(command, sizes)
            if problem is not None:
                raise field_error(f"groups.{index}.commands", problem)
    _share_resources(conf, groups)
    _fill(conf, nodes=sum(sizes))


def check_replica_groups(conf: Any) -> None:
    """dstack's rules for a service with ``groups``; fills names and the run-wide fields."""
    groups: list[ReplicaGroup] = conf.groups
    _name_groups(groups, what="replica")
    for field in ("scaling", "commands", "entrypoint"):
        if getattr(conf, field):
            raise field_error(field, f"with replica groups, set {field} in each group instead")
    for index, group in enumerate(groups):
        for field in ("image", "python", "nvcc", "privileged"):
            if getattr(conf, field) and getattr(group, field) is not None:
                raise field_error(
                    f"groups.{index}.{field}",
                    f"{field} is set at the service level too: set it in one place only",
                )
        if conf.image is not None and (group.python is not None or group.nvcc is not None):
            raise field_error(
                f"groups.{index}.{'python' if group.python is not None else 'nvcc'}",
                "the service sets image: a group cannot pick python or nvcc as well",
            )
        if (conf.python is not None or conf.nvcc) and group.image is not None:
            raise field_error(
                f"groups.{index}.image",
                "the service sets python or nvcc: a group cannot pick an image as well",
            )
        if not group.commands and group.image is None and conf.image is None:
            raise field_error(
                f"groups.{index}.commands",
                "either commands or image in the group, or image at the service level, must be set",
            )
    total = Range[int](
        min=sum(g.replicas.min or 0 for g in groups),
        max=sum(g.replicas.max or 0 for g in groups),
    )
    if "replicas" in conf.model_fields_set and conf.replicas != total:
        raise field_error("replicas", "a count and replica groups are mutually exclusive")
    _share_resources(conf, groups)
    _fill(conf, replicas=total)


def group_configuration(conf: Any, group: str | None) -> Any:
    """The configuration as the jobs of ``group`` run it: the group's fields in place.

    A configuration without groups (or ``group`` None) is returned as it is.
    """
    groups = getattr(conf, "groups", None)
    if not groups or group is None:
        return conf
    found = next((g for g in groups if g.name == group), None)
    if found is None:
        raise ValueError(f"the configuration has no group named {group!r}")
    update: dict[str, Any] = {"commands": found.commands, "resources": found.resources}
    if conf.type == "task":
        update["ports"] = found.ports
    else:
        update |= {"replicas": found.replicas, "scaling": found.scaling}
        for field in ("image", "python", "nvcc", "privileged"):
            if getattr(found, field) is not None:
                update[field] = getattr(found, field)
    return conf.model_copy(update=update)


def node_group_sizes(conf: Any) -> list[int]:
    """Nodes per group of a task, in order; a task without groups is one group."""
    groups = getattr(conf, "groups", None)
    if groups:
        return [g.nodes for g in groups]
    return [int(getattr(conf, "nodes", 1) or 1)]


def node_group_of(conf: Any, rank: int) -> str | None:
    """The name of the node group whose node has task-wide ``rank``; None without groups."""
    groups = getattr(conf, "groups", None)
    if not groups:
        return None
    first = 0
    for group in groups:
        if rank < first + group.nodes:
            return str(group.name)
        first += group.nodes
    raise ValueError(f"rank {rank} is past the task's {first} nodes")


def _name_groups(groups: Sequence[NodeGroup | ReplicaGroup], *, what: str) -> None:
    if not groups:
        raise field_error("groups", f"give at least one {what} group")
    for index, group in enumerate(groups):
        if group.name is None:
            _fill(group, name=str(index))
    names = [g.name for g in groups]
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        raise field_error("groups", f"each {what} group needs its own name; given twice: {twice}")


def _share_resources(conf: Any, groups: Sequence[NodeGroup | ReplicaGroup]) -> None:
    first = groups[0].resources
    for index, group in enumerate(groups[1:], start=1):
        if group.resources != first:
            raise not_supported(
                f"groups.{index}.resources",
                value="groups asking for different resources (Berth places every job of"
                " a run with one request: give each group the same resources)",
            )
    if "resources" in conf.model_fields_set and conf.resources != first:
        raise field_error(
            "resources",
            "with groups, each group's resources apply (dstack does not inherit the top"
            " level): set resources in the groups",
        )
    _fill(conf, resources=first)


def _fill(model: BerthModel, **values: Any) -> None:
    # Configurations are frozen once made; these fields are derived while validating
    # (dstack fills group names the same way), so they are set before anyone reads them.
    for key, value in values.items():
        object.__setattr__(model, key, value)
