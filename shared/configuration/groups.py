"""Groups: a task's node groups and a service's replica groups, as dstack has them.

A task with ``groups`` runs each group's ``commands`` and ``ports`` on that
group's ``nodes``; together they are one multi-node task, one gang, whose ranks
run through the groups in order (group 0's first node is rank 0, the master).
A service with ``groups`` (dstack's legacy spelling: ``replicas`` as a list) runs
each group's replicas with the group's commands, image and scaling rules.

**Each group its own ``resources``** (dstack does not inherit the top level). The
queue places each job by its group's request (``shared.placement.requests.group_requests``,
``QueuedRun.job_requests``), still all of a run's jobs or none; each pod requests
its group's resources. The first group's ``resources`` also becomes the run's,
for run-wide readers that need one (the plan's offers); submission checks each
group's. ``nodes`` of a task and ``replicas`` of a service become the groups'
totals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from shared.configuration.base import READING_STORED, BerthModel, field_error
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


class Router(BerthModel):
    """A replica group that routes the service's requests (dstack's ``router``).

    ``sglang``: the group runs the SGLang router; the service's requests go to it alone,
    and Berth keeps its ``/workers`` list equal to the other groups' ready replicas
    (:mod:`workers.service_routers`). ``dynamo``: the group runs NVIDIA Dynamo's
    frontend, which finds workers itself; the other groups' pods start once the
    router's has an address, given them as ``DSTACK_ROUTER_INTERNAL_IP``.
    """

    type: Literal["sglang", "dynamo"] = "sglang"


class ReplicaGroup(BerthModel):
    """Replicas of a service that share commands, image and scaling (dstack's ``ReplicaGroup``)."""

    dstack_only_fields = frozenset({"reservation"})

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
    docker: bool | None = None
    """Docker inside this group's containers (the run-level ``docker``'s meaning)."""
    privileged: bool | None = None
    router: Router | None = None

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
        for other in ("image", "python", "nvcc"):
            if self.docker and getattr(self, other):
                raise field_error("docker", f"{other} and docker are mutually exclusive: set one")
        if self.docker and self.privileged is False:
            # dstack's rule for groups; at the run level dstack (and Berth) let docker win.
            raise field_error(
                "privileged",
                "privileged: false contradicts docker: true (Docker-in-Docker needs a"
                " privileged container)",
            )
        if self.replicas.min != self.replicas.max and self.scaling is None:
            raise field_error(
                "replicas", f"a range ({self.replicas}) needs scaling rules in `scaling` too"
            )
        if self.replicas.min == self.replicas.max and self.scaling is not None:
            raise field_error("scaling", "needs replicas set to a range such as 1..4")
        if self.router is not None and not (self.replicas.min == self.replicas.max == 1):
            raise field_error("replicas", "a group with a router runs exactly one replica")
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
        for field in ("image", "python", "nvcc", "docker", "privileged"):
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
        _check_docker_across_levels(conf, group, index)
        if not group.commands and group.image is None and conf.image is None:
            raise field_error(
                f"groups.{index}.commands",
                "either commands or image in the group, or image at the service level, must be set",
            )
    routers = [i for i, g in enumerate(groups) if g.router is not None]
    if len(routers) > 1:
        raise field_error(f"groups.{routers[1]}.router", "only one replica group may route")
    if routers and len(groups) == 1:
        raise field_error("groups.0.router", "a router needs another group of replicas to route to")
    total = Range[int](
        min=sum(g.replicas.min or 0 for g in groups),
        max=sum(g.replicas.max or 0 for g in groups),
    )
    if "replicas" in conf.model_fields_set and conf.replicas != total:
        raise field_error("replicas", "a count and replica groups are mutually exclusive")
    _share_resources(conf, groups)
    _fill(conf, replicas=total)


def groups_differ(conf: Any) -> bool:
    """Whether the run's groups ask for different resources (each job its group's then)."""
    groups = getattr(conf, "groups", None) or []
    return any(g.resources != groups[0].resources for g in groups)


def router_group(conf: Any) -> ReplicaGroup | None:
    """The service's replica group with a ``router``, if it has one."""
    return next((g for g in getattr(conf, "groups", None) or () if g.router is not None), None)


def stored_router(configuration: Mapping[str, Any]) -> tuple[str, str] | None:
    """(group name, router type) from a stored service configuration, unparsed: the
    service proxy asks on every request."""
    for group in configuration.get("groups") or ():
        router = group.get("router")
        if router:
            return str(group["name"]), str(router.get("type", "sglang"))
    return None


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
        for field in ("image", "python", "nvcc", "docker", "privileged"):
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


def _check_docker_across_levels(conf: Any, group: ReplicaGroup, index: int) -> None:
    # dstack: docker picks the image, so across levels it excludes image, python and
    # nvcc as well (a group's field counts once given, even as false).
    for field in ("image", "python", "nvcc"):
        if conf.docker and getattr(group, field) is not None:
            raise field_error(
                f"groups.{index}.{field}",
                f"the service sets docker: true, which picks the image: a group cannot"
                f" set {field} as well",
            )
        if getattr(conf, field) and group.docker is not None:
            raise field_error(
                f"groups.{index}.docker",
                f"the service sets {field}: a group cannot pick docker as well",
            )


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
    # A stored run carries the first group's resources at the top (filled below).
    written = "resources" in conf.model_fields_set and not READING_STORED.get()
    if written and any(g.resources != conf.resources for g in groups):
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
