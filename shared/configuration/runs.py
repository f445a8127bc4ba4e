"""Run configurations in dstack's ``.dstack.yml`` format: task, dev-environment, service.

The three types share :class:`_RunConfigurationBase`; ``type`` discriminates them in
:data:`AnyRunConfiguration`. Keys dstack has and Berth does not honour yet are listed
in ``dstack_only_fields`` and refused by name (see :mod:`shared.configuration.base`).
``spot_policy`` is accepted because dstack files carry it everywhere, but Kubernetes
has no spot market of its own: Berth records it and schedules the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from shared.configuration.base import READING_STORED, BerthModel, field_error, not_supported
from shared.configuration.code import FileField, RepoField
from shared.configuration.fields import (
    Backends,
    EnvVars,
    InstanceRef,
    NodeLabelValues,
    OffableDuration,
    PortMappingField,
    Probe,
    Python,
    RateLimit,
    RegistryAuth,
    ResourceName,
    Retry,
    Scaling,
    ServiceModelField,
    SpotPolicy,
    Tags,
    VolumeMountField,
    port_mapping_from_yaml,
)
from shared.configuration.groups import (
    NodeGroup,
    ReplicaGroup,
    check_node_groups,
    check_replica_groups,
)
from shared.configuration.interpolation import names_groups, node_ip_problem
from shared.configuration.ranges import CountRange, Range
from shared.configuration.resources import ResourcesSpec
from shared.configuration.run_policies import (
    ScheduleField,
    StartupOrder,
    StopCriteria,
    UtilizationPolicy,
)

# dstack keys Berth refuses on every run type. Sources: dstack's BaseRunConfiguration
# and ProfileParams (src/dstack/_internal/core/models/{configurations,profiles}.py).
RUN_FIELDS_NOT_SUPPORTED = frozenset(
    {
        "backend_options",
        "creation_policy",
        "env_file",
        "home_dir",
        "idle_duration",
        "max_price",
        "reservation",
        "setup",
        "single_branch",
        "stop_duration",
        "user",
    }
)

_IDES_NOT_SUPPORTED = frozenset({"zed"})


class _RunConfigurationBase(BerthModel):
    """Fields every run type has."""

    dstack_only_fields = RUN_FIELDS_NOT_SUPPORTED

    name: ResourceName | None = None
    """The run name; Berth generates one when absent."""
    image: str | None = Field(None, min_length=1)
    python: Python | None = None
    """Python version preinstalled in Berth's default image; exclusive with ``image``."""
    nvcc: bool = False
    """Run in the server's image with the CUDA compiler (``devel_image``) instead of its
    default image; exclusive with ``image``. Refused at submission when the server has
    no such image: Berth never installs anything into a pod (air-gapped clusters)."""
    docker: bool = False
    """Docker inside the container (dstack's rules): the run's image is the server's
    ``dind_image``, its container privileged, and dockerd is up before the commands
    (``workers.dind``). Exclusive with ``image``, ``python`` and ``nvcc``; it
    overrides ``privileged`` (``privileged: false`` beside it is ignored, as dstack does)."""

    @field_validator("docker")
    @classmethod
    def _docker_picks_the_image(cls, value: bool, info: ValidationInfo) -> bool:
        # Declared after image, python and nvcc, so their values are already in info.data.
        for other in ("image", "python", "nvcc"):
            if value and info.data.get(other):
                raise ValueError(f"{other} and docker are mutually exclusive: set one")
        return value

    env: EnvVars = Field(default_factory=dict)
    resources: ResourcesSpec = ResourcesSpec()
    privileged: bool = False
    registry_auth: RegistryAuth | None = None
    spot_policy: SpotPolicy | None = None
    """Accepted for dstack compatibility; meaningless on Kubernetes."""
    retry: Retry = None
    max_duration: OffableDuration = None
    """Seconds the run may stay running; ``None`` (``off``) means no limit."""
    priority: int = Field(0, ge=0, le=100, strict=True)
    """Higher runs are scheduled first, 0..100."""
    working_dir: str | None = None
    repos: list[RepoField] = Field(default_factory=list)
    """The user's code: local directories the CLI sends, or git URLs it clones and sends."""
    files: list[FileField] = Field(default_factory=list)
    """Local files or directories the CLI sends, each to a container path."""
    shell: str | None = None
    """``sh``, ``bash`` or an absolute path; Berth picks when absent."""
    fleets: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """Fleets the run may use; any fleet of the project when empty."""
    volumes: list[VolumeMountField] = Field(default_factory=list)
    tags: Tags = Field(default_factory=dict)
    """dstack's resource tags; on Kubernetes they label (or annotate) the run's pods."""
    schedule: ScheduleField = None
    """Crons (UTC) at which Berth starts the run (``shared.state.schedules``)."""
    utilization_policy: UtilizationPolicy | None = None
    """Stop the run when its GPUs stay under a utilisation (``workers.gpu_utilization``)."""
    instance_types: NodeLabelValues = None
    availability_zones: NodeLabelValues = None
    regions: NodeLabelValues = None
    """Only nodes whose well-known labels name one of these (``shared.placement.locality``)."""
    dstack: bool = False
    """dstack's "dstack inside dstack": the run's environment names this server and the
    run's project (``BERTH_URL``, ``BERTH_PROJECT``), so the ``berth`` CLI in the run
    works once given a token (``BERTH_TOKEN``, or ``DSTACK_TOKEN`` as dstack's examples
    pass it). Needs the server's ``api.url_for_runs``."""
    backends: Backends = None
    """Only nodes of these clouds (their providerID, ``shared.placement.locality``); ``kubernetes``:
    any node."""
    instances: list[InstanceRef] = Field(default_factory=list)
    """Only these nodes (``shared.placement.fleets.instance_nodes``); the run fails if one names
    no node, as dstack's does instead of provisioning."""

    @field_validator("fleets", mode="before")
    @classmethod
    def _own_project_fleets(cls, value: Any) -> Any:
        # dstack's `project/fleet` names a fleet another project exports; Berth has no exports.
        if isinstance(value, list) and not READING_STORED.get():
            for index, name in enumerate(value):
                if isinstance(name, str) and "/" in name:
                    raise not_supported(str(index), value=f"{name} (another project's fleet)")
        return value

    @field_validator("working_dir")
    @classmethod
    def _absolute_working_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"expected an absolute path such as /workspace, got {value!r}")
        return value

    @field_validator("shell")
    @classmethod
    def _known_shell(cls, value: str | None) -> str | None:
        if value is None or value in ("sh", "bash") or value.startswith("/"):
            return value
        raise ValueError(f"expected sh, bash or an absolute path such as /bin/zsh, got {value!r}")

    @model_validator(mode="after")
    def _image_or_python(self) -> Self:
        if self.image is not None and self.python is not None:
            raise field_error("python", "image and python are mutually exclusive: set one")
        if self.image is not None and self.nvcc:
            raise field_error("nvcc", "image and nvcc are mutually exclusive: set one")
        return self

    @model_validator(mode="after")
    def _registry_auth_env_declared(self) -> Self:
        unknown = (
            sorted(self.registry_auth.env_names() - set(self.env)) if self.registry_auth else []
        )
        if unknown:
            raise field_error(
                "registry_auth",
                f"${{{{ env.{unknown[0]} }}}} names no variable of the run's env: add"
                f" {unknown[0]} to env (a bare name takes your shell's value)",
            )
        return self

    @property
    def env_from_submitter(self) -> list[str]:
        """Variables written as a bare ``KEY`` whose value the client must supply."""
        return sorted(key for key, value in self.env.items() if value is None)


class TaskConfiguration(_RunConfigurationBase):
    """Commands on one or more nodes, run to completion."""

    type: Literal["task"] = "task"
    entrypoint: str | None = Field(None, min_length=1)
    """dstack's Docker-like form: this command line, with each of ``commands`` as one
    more argument, replaces the shell script ``commands`` otherwise make."""
    commands: list[str] = Field(default_factory=list)
    nodes: int = Field(1, ge=1, strict=True)
    """With ``groups``, their total (``shared.configuration.groups``)."""
    ports: list[PortMappingField] = Field(default_factory=list)
    groups: list[NodeGroup] | None = None
    """Heterogeneous multi-node: each group's nodes run its own commands and ports."""
    startup_order: StartupOrder = "any"
    """Multi-node: which pods start first; the others are created once those run."""
    stop_criteria: StopCriteria = "all-done"
    """Multi-node: ``master-done`` ends the task (done) when rank 0 exits with 0."""

    @model_validator(mode="after")
    def _commands_or_image(self) -> Self:
        if self.groups is not None:
            check_node_groups(self)
            return self
        _require_commands_or_image(self.commands, self.image, self.entrypoint)
        for command in self.commands:
            # A task without groups is dstack's one group: groups[0].nodes[j] are its nodes.
            problem = node_ip_problem(command, [self.nodes])
            if problem is not None:
                raise field_error("commands", problem)
        return self


class DevEnvironmentConfiguration(_RunConfigurationBase):
    """An interactive environment reached over SSH, optionally with an IDE server."""

    # An entrypoint would replace the environment's own process (init, then waiting
    # for SSH) and leave nothing to attach to.
    dstack_only_fields = RUN_FIELDS_NOT_SUPPORTED | {"version", "entrypoint"}

    type: Literal["dev-environment"] = "dev-environment"
    ide: Literal["vscode", "cursor", "windsurf"] | None = None
    init: list[str] = Field(default_factory=list)
    """Commands run once the environment starts."""
    inactivity_duration: OffableDuration = None
    """Seconds without an SSH connection before Berth stops it; ``None``: never."""
    ports: list[PortMappingField] = Field(default_factory=list)

    @field_validator("ide", mode="before")
    @classmethod
    def _supported_ide(cls, value: Any) -> Any:
        if isinstance(value, str) and value in _IDES_NOT_SUPPORTED:
            raise not_supported(value=value)
        return value


class ServiceConfiguration(_RunConfigurationBase):
    """A long-running HTTP server behind Berth's proxy, with one or more replicas."""

    dstack_only_fields = RUN_FIELDS_NOT_SUPPORTED | {"https"}

    type: Literal["service"] = "service"
    entrypoint: str | None = Field(None, min_length=1)
    """As for tasks: this command line with each of ``commands`` as one more argument."""
    port: Annotated[
        int, Field(ge=1, le=65535), BeforeValidator(lambda v: _service_port_from_yaml(v))
    ]
    """The container port the application listens on."""
    commands: list[str] = Field(default_factory=list)
    replicas: CountRange = Range[int](min=1, max=1)
    """A count, or ``min..max`` with ``scaling``: the service starts with ``max(min, 1)``.
    A list is dstack's legacy spelling of ``groups``; with groups, their total."""
    groups: list[ReplicaGroup] | None = None
    """Replica groups, each with its own count, commands, image and ``scaling``."""
    scaling: Scaling | None = None
    """Requests per second the proxy counts move the count within ``replicas``
    (``workers.service_scaling``, dstack's rule and delays)."""
    model: ServiceModelField = None
    """The model served through ``/proxy/models/<project>/`` (``api.services.models``)."""
    auth: bool = True
    probes: list[Probe] | None = None
    """The replica's readiness probe (its container's ``readinessProbe``): the proxy
    sends a replica requests only while it passes. At most one: Kubernetes runs one
    readiness probe per container. ``None`` and ``[]``: ready once running (dstack's
    default chat probe for a ``model`` POSTs a body, which Kubernetes probes cannot)."""
    strip_prefix: bool = True
    """Forward ``/proxy/services/<project>/<run>/x`` as ``/x`` (true) or whole (false)."""
    rate_limits: list[RateLimit] = Field(default_factory=list)
    """Per-prefix request rates the proxy enforces (429 beyond them)."""
    gateway: Literal[False] | None = None
    """Only ``false`` (serve through the server's own proxy, which is all Berth has)."""

    @field_validator("gateway", mode="before")
    @classmethod
    def _no_gateways(cls, value: Any) -> Any:
        # dstack: true asks for the default gateway, a string names one; Berth has none.
        if value is True or isinstance(value, str):
            shown = str(value).lower() if value is True else value
            raise not_supported(
                value=f"{shown} (Berth serves services through its own proxy, at"
                " /proxy/services/<project>/<run>/; it runs no gateways)"
            )
        return value

    @field_validator("probes")
    @classmethod
    def _one_probe(cls, value: list[Probe] | None) -> list[Probe] | None:
        if value is not None and len(value) > 1:
            raise ValueError(
                f"give at most one probe, got {len(value)}: Kubernetes runs one readiness"
                " probe per container"
            )
        return value

    @field_validator("rate_limits")
    @classmethod
    def _distinct_prefixes(cls, value: list[RateLimit]) -> list[RateLimit]:
        prefixes = [limit.prefix for limit in value]
        twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if twice:
            raise ValueError(f"each prefix may have one limit; given twice: {', '.join(twice)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _replica_list_is_groups(cls, data: Any) -> Any:
        # dstack's legacy spelling of `groups`: `replicas` as a list of replica groups.
        if isinstance(data, dict) and isinstance(data.get("replicas"), list):
            if data.get("groups") is not None:
                raise field_error("groups", "replicas as a list and groups are the same: give one")
            data = dict(data)
            data["groups"] = data.pop("replicas")
        return data

    @model_validator(mode="after")
    def _replicas_and_scaling_agree(self) -> Self:
        for command in self.commands + [c for g in self.groups or [] for c in g.commands]:
            if names_groups(command):
                # dstack's groups[i].replicas[j].IP_ADDRESS: a replica's peers come and go.
                raise not_supported(
                    "commands", value="${{ groups[i].replicas[j].IP_ADDRESS }} (interpolation)"
                )
        if self.groups is not None:
            check_replica_groups(self)
            return self
        _require_commands_or_image(self.commands, self.image, self.entrypoint)
        if self.replicas.max is None:
            raise field_error("replicas", f"needs an upper bound such as 1..4, got {self.replicas}")
        if self.replicas.min != self.replicas.max and self.scaling is None:
            raise field_error(
                "replicas", f"a range ({self.replicas}) needs scaling rules in `scaling` too"
            )
        return self


AnyRunConfiguration = Annotated[
    TaskConfiguration | DevEnvironmentConfiguration | ServiceConfiguration,
    Field(discriminator="type"),
]
"""Any run configuration, told apart by ``type``."""

RUN_CONFIGURATION_TYPES: dict[str, type[_RunConfigurationBase]] = {
    "task": TaskConfiguration,
    "dev-environment": DevEnvironmentConfiguration,
    "service": ServiceConfiguration,
}


def _service_port_from_yaml(value: Any) -> Any:
    # dstack keeps `port` as a mapping for history's sake and only uses its container side.
    if isinstance(value, str):
        return port_mapping_from_yaml(value)["container_port"]
    if isinstance(value, dict) and "container_port" in value:
        return value["container_port"]
    return value


def _require_commands_or_image(
    commands: list[str], image: str | None, entrypoint: str | None = None
) -> None:
    if not commands and image is None and entrypoint is None:
        raise field_error(
            "commands", "either commands or image must be set (an image runs its entrypoint)"
        )
