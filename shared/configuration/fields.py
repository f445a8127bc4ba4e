"""Value types shared by run configurations: durations, ports, env, volumes, retry, probes.

Each shorthand dstack accepts (``2h``, ``8080:80``, ``KEY=VALUE``, ``name:/path``,
``retry: true``) is normalised here into one shape, so the rest of Berth reads a
single form: durations are whole seconds, ``off`` is ``None``, env is a dict.

dstack fills ``${{ secrets.x }}``, ``${{ env.X }}`` and ``${{ dstack.node_rank }}``
into env values, registry credentials, volume names and probe headers. Berth fills
project secrets, ``env`` in ``registry_auth`` and the node rank in volume names
(:mod:`shared.configuration.interpolation`); anywhere else the literal text would
reach the pod as if it were the value, so it is refused as "not supported yet"
(:func:`refuse_interpolation`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from shared.configuration.base import READING_STORED, BerthModel, field_error, not_supported
from shared.configuration.interpolation import has_node_rank, with_node_rank, without_node_rank

RetryEvent = Literal["no-capacity", "error", "interruption"]
SpotPolicy = Literal["spot", "on-demand", "auto"]
ALL_RETRY_EVENTS: tuple[RetryEvent, ...] = ("no-capacity", "error", "interruption")
PythonVersion = Literal["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]

DURATION_EXPECTED = "expected a duration such as 90s, 30m, 2h, 1d, 1w or a number of seconds"
# dstack's own run-name rule; it is also a valid Kubernetes label value and name prefix.
RESOURCE_NAME_RE = re.compile(r"[a-z][a-z0-9-]{1,40}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PORT_MAPPING_RE = re.compile(r"(?:(\d+|\*):)?(\d+)")
_INTERPOLATION_RE = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
_SECRET_REFERENCE_RE = re.compile(r"\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_-]*\s*\}\}")
ENV_REFERENCE_RE = re.compile(r"\$\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""dstack's ``${{ env.NAME }}``: the run's own ``env`` value, allowed in ``registry_auth``."""


def interpolate_env(value: str, env: Mapping[str, str | None]) -> str:
    """``value`` with every ``${{ env.NAME }}`` replaced by the run's ``env`` value."""
    return ENV_REFERENCE_RE.sub(lambda m: env.get(m.group(1)) or "", value)


# dstack's tag rules (src/dstack/_internal/utils/tags.py), "valid across most backends".
_TAG_KEY_RE = re.compile(r"[_\-a-zA-Z0-9]{1,60}")
_TAG_VALUE_RE = re.compile(r"[a-zA-Z0-9 .:/=_\-+@]{0,256}")


def parse_duration(value: object) -> int:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1w``, ``"3600"`` or an int: whole seconds, >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _DURATION_RE.fullmatch(text)
        if match is not None:
            return int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    raise ValueError(f"cannot parse {value!r}: {DURATION_EXPECTED}")


def parse_offable_duration(value: object) -> int | None:
    """Like :func:`parse_duration`, but ``off``/``false``/absent mean no limit (``None``).

    YAML 1.1 reads a bare ``off`` as ``False``, so both spellings arrive here.
    """
    if value is None or value is False or value == "off":
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"cannot parse {value!r}: {DURATION_EXPECTED}, or off") from None


def refuse_interpolation(value: object, field: str = "", *, secrets: bool = False) -> None:
    """Raise "not supported yet" when ``value`` holds a dstack ``${{ ... }}`` expression.

    With ``secrets``, ``${{ secrets.NAME }}`` is allowed (project secrets, resolved when
    the pod is made: env values and registry credentials). Only the expression is
    shown, never the rest of the value (it may be a secret). Runs stored before Berth
    refused it still load (``READING_STORED``).
    """
    if isinstance(value, str) and not READING_STORED.get():
        if secrets:
            value = _SECRET_REFERENCE_RE.sub("", value)
        match = _INTERPOLATION_RE.search(value)
        if match is not None:
            raise not_supported(field, value=f"{match.group(0)} (interpolation)")


Duration = Annotated[int, BeforeValidator(parse_duration)]
"""Whole seconds, written as ``90s``, ``30m``, ``2h``, ``1d``, ``1w`` or a number."""
OffableDuration = Annotated[int | None, BeforeValidator(parse_offable_duration)]
"""Whole seconds, or ``None`` for ``off`` (no limit)."""
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


def _resource_name(value: Any) -> Any:
    if isinstance(value, str) and RESOURCE_NAME_RE.fullmatch(value) is None:
        raise ValueError(
            f"invalid name {value!r}: expected 2-41 lowercase letters, digits or hyphens,"
            " starting with a letter (e.g. train-llama)"
        )
    return value


ResourceName = Annotated[str, BeforeValidator(_resource_name)]


def _env_from_yaml(value: Any) -> Any:
    if isinstance(value, list):
        return _env_from_list(value)
    if not isinstance(value, dict):
        return value
    env: dict[str, str | None] = {}
    for key, raw in value.items():
        _check_env_name(key)
        if isinstance(raw, bool) or not isinstance(raw, str | int | float | None):
            # The value is not echoed: env values are often secrets.
            kind = type(raw).__name__
            raise ValueError(f"env {key}: expected a string value, got a {kind} (quote it)")
        refuse_interpolation(raw, key, secrets=True)
        env[key] = None if raw is None else str(raw)
    return env


EnvVars = Annotated[dict[str, str | None], BeforeValidator(_env_from_yaml)]
"""``[KEY=VALUE, KEY]`` or ``{KEY: VALUE}``; a ``None`` value (bare ``KEY``) is filled
from the submitting user's environment by the client before the run is created."""


def _python_from_yaml(value: Any) -> Any:
    # YAML reads `python: 3.10` as the float 3.1; dstack restores the intended version.
    if isinstance(value, float):
        return "3.10" if value == 3.1 else repr(value)
    return value


Python = Annotated[PythonVersion, BeforeValidator(_python_from_yaml)]


class PortMapping(BerthModel):
    """A container port and the local port the client forwards to it (``None``: any free)."""

    local_port: Port | None = None
    container_port: Port

    def __str__(self) -> str:
        if self.local_port == self.container_port:
            return str(self.container_port)
        local = "*" if self.local_port is None else str(self.local_port)
        return f"{local}:{self.container_port}"


def port_mapping_from_yaml(value: Any) -> Any:
    """``8080`` (same port locally), ``80:8080`` (local:container) or ``*:8080``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"local_port": value, "container_port": value}
    if not isinstance(value, str):
        return value
    match = _PORT_MAPPING_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"cannot parse {value!r}: expected PORT, LOCAL:PORT or *:PORT")
    local, container = match.groups()
    local_port = None if local == "*" else int(local or container)
    return {"local_port": local_port, "container_port": int(container)}


PortMappingField = Annotated[PortMapping, BeforeValidator(port_mapping_from_yaml)]


class RegistryAuth(BerthModel):
    """Credentials for pulling a private image.

    The password never shows in ``repr``/``str``/logs, but JSON dumps carry it: the
    stored configuration is what the worker builds the image pull secret from. Public
    responses must leave ``registry_auth`` out.
    """

    username: str
    password: SecretStr

    @field_validator("username", "password", mode="before")
    @classmethod
    def _only_secrets(cls, value: Any) -> Any:
        # ${{ env.NAME }} is checked against the run's env by the run configuration.
        text = ENV_REFERENCE_RE.sub("", value) if isinstance(value, str) else value
        refuse_interpolation(text, secrets=True)
        return value

    def env_names(self) -> set[str]:
        """The run's env variables ``${{ env.NAME }}`` in these credentials name."""
        texts = (self.username, self.password.get_secret_value())
        return {m.group(1) for text in texts for m in ENV_REFERENCE_RE.finditer(text)}

    @field_serializer("password", when_used="json")
    def _reveal_for_storage(self, password: SecretStr) -> str:
        return password.get_secret_value()


class RetryPolicy(BerthModel):
    """Which failures resubmit the run, and for how long (dstack's default: 1 hour)."""

    on_events: list[RetryEvent] = Field(
        default_factory=lambda: list(ALL_RETRY_EVENTS), min_length=1
    )
    duration: Duration = 3600


def _retry_from_yaml(value: Any) -> Any:
    if value is True:
        return RetryPolicy()
    if value is False:
        return None
    return value


Retry = Annotated[RetryPolicy | None, BeforeValidator(_retry_from_yaml)]
"""``true`` retries on every event for an hour; ``false`` or absent never retries."""


class VolumeMount(BerthModel):
    """A named volume (``name``) or a node directory (``instance_path``) at a container path.

    A node directory is a hostPath: the server configuration must allow it
    (``allow_host_volumes``), which is checked when the run is submitted.
    """

    name: str | None = Field(None, min_length=1)
    """A volume of the project (``berth volume apply``)."""
    instance_path: str | None = None
    """A directory on the node (dstack's instance volume)."""
    path: str
    read_only: bool = False
    optional: bool = False
    """For an instance path: where host volumes are not allowed, run without it
    instead of refusing the run (dstack's meaning)."""

    @field_validator("name", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        if isinstance(value, list):
            # dstack picks one of several volumes in different regions; a cluster has one.
            raise not_supported(value="a list of volume names")
        # Each node of a multi-node task mounts its own volume (name_for).
        refuse_interpolation(without_node_rank(value) if isinstance(value, str) else value)
        return value

    @field_validator("path", "instance_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_path(value)

    @model_validator(mode="after")
    def _volume_or_instance_path(self) -> Self:
        if (self.name is None) == (self.instance_path is None):
            raise field_error("name", "set exactly one of name (a volume) or instance_path")
        if self.optional and self.instance_path is None:
            raise field_error("optional", "only an instance_path mount can be optional")
        return self

    @property
    def is_instance(self) -> bool:
        return self.instance_path is not None

    @property
    def per_node(self) -> bool:
        """Whether the name holds ``${{ dstack.node_rank }}``: one volume per node."""
        return self.name is not None and has_node_rank(self.name)

    def name_for(self, rank: int) -> str | None:
        """The volume the node of ``rank`` mounts (the name, with its rank filled in)."""
        return None if self.name is None else with_node_rank(self.name, rank)


def _volume_from_yaml(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    source, sep, path = value.partition(":")
    if not sep or not source or not path:
        raise ValueError(
            f"cannot parse {value!r}: expected NAME:/container/path or /node/path:/container/path"
        )
    if "/" in source:
        return {"instance_path": source, "path": path}  # dstack's instance (host path) mount
    return {"name": source, "path": path}


VolumeMountField = Annotated[VolumeMount, BeforeValidator(_volume_from_yaml)]


def _tags_from_yaml(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key, raw in value.items():
        if not isinstance(key, str) or _TAG_KEY_RE.fullmatch(key) is None:
            raise ValueError(f"invalid tag key {key!r}: expected 1-60 letters, digits, '-' or '_'")
        if not isinstance(raw, str) or _TAG_VALUE_RE.fullmatch(raw) is None:
            raise ValueError(
                f"invalid value of tag {key}: {raw!r}: expected a string of at most 256"
                " letters, digits, spaces or .:/=_-+@ (quote numbers)"
            )
    return value


Tags = Annotated[dict[str, str], BeforeValidator(_tags_from_yaml)]
"""dstack's ``tags``: short keys and printable values."""


# A Kubernetes label value: what a node's instance-type, zone or region label can hold.
_LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _label_values_from_yaml(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]  # one name, as dstack users write `regions: us-east-1` too
    if not isinstance(value, list):
        return value
    if not value:
        raise ValueError("an empty list allows nothing: omit it, or name at least one")
    for item in value:
        if not isinstance(item, str) or _LABEL_VALUE_RE.fullmatch(item) is None:
            raise ValueError(
                f"{item!r} cannot be a node label's value: expected up to 63 letters,"
                " digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    return value


NodeLabelValues = Annotated[list[str] | None, BeforeValidator(_label_values_from_yaml)]
"""``instance_types``, ``availability_zones``, ``regions``: values of the well-known node
labels that say where a node is (:mod:`shared.placement.locality`); None: anywhere."""

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


def _backends_from_yaml(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and not value:
        raise ValueError("an empty list allows no backend: omit it, or write [kubernetes]")
    return value


def _known_backend(name: str) -> str:
    if name not in DSTACK_BACKENDS:
        known = ", ".join(sorted(DSTACK_BACKENDS))
        raise ValueError(f"{name!r} is not a dstack backend; expected one of {known}")
    return name


Backends = Annotated[
    list[Annotated[str, AfterValidator(_known_backend)]] | None,
    BeforeValidator(_backends_from_yaml),
]
"""dstack's ``backends``: the clouds whose nodes may be used (:mod:`shared.placement.locality`);
``kubernetes`` is any node of the cluster; None: any."""


class InstanceRef(BerthModel):
    """One of dstack's ``instances``: a node by instance name, by hostname or address, or
    a fleet's instance by number. A bare string is a name."""

    name: str | None = Field(None, min_length=1)
    """A node's name, or ``<fleet>-<n>``: the fleet's n-th node (``shared.placement.fleets``)."""
    hostname: str | None = Field(None, min_length=1)
    """A node's hostname label or one of its addresses."""
    fleet: str | None = Field(None, min_length=1)
    instance: int | None = Field(None, ge=0, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_name_it(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict):
            fleet = data.get("fleet")
            if isinstance(fleet, str) and "/" in fleet and not READING_STORED.get():
                raise not_supported("fleet", value=f"{fleet} (another project's fleet)")
            ways = [k for k in ("name", "hostname", "fleet") if data.get(k) is not None]
            if len(ways) != 1 or ("fleet" in ways) != (data.get("instance") is not None):
                raise ValueError(
                    "name an instance one way: a name, {name: ...}, {hostname: ...},"
                    " or {fleet: ..., instance: N}"
                )
        return data

    def __str__(self) -> str:
        if self.fleet is not None:
            return f"instance {self.instance} of fleet {self.fleet}"
        return f"hostname {self.hostname}" if self.hostname else f"instance {self.name}"


class HttpHeader(BerthModel):
    name: str = Field(min_length=1)
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _no_interpolation(cls, value: Any) -> Any:
        refuse_interpolation(value)
        return value


class Probe(BerthModel):
    """An HTTP GET health probe of a service replica; defaults are dstack's."""

    dstack_only_fields = frozenset({"body", "until_ready"})
    refusal_reasons = {
        "body": "Kubernetes HTTP probes send a GET, without a body",
        "until_ready": "a Kubernetes readiness probe runs for the replica's whole life",
    }

    type: Literal["http"]
    url: str = "/"
    method: Literal["get"] = "get"
    headers: list[HttpHeader] = Field(default_factory=list, max_length=16)
    timeout: Duration = 10
    interval: Duration = 15
    ready_after: int = Field(1, ge=1, strict=True)

    @field_validator("url")
    @classmethod
    def _path_only(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"probe url must be a path starting with '/', got {value!r}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _kubernetes_probes_only_get(cls, value: Any) -> Any:
        # Kubernetes HTTP probes always send GET; other dstack methods have no equivalent.
        if isinstance(value, str) and value.lower() != "get":
            raise not_supported(value=value.lower())
        return value.lower() if isinstance(value, str) else value


class Scaling(BerthModel):
    """Replica auto-scaling on requests per second; delays are dstack's defaults.

    ``window`` is the span the average is taken over (dstack's default: 60 s)."""

    metric: Literal["rps"]
    target: float = Field(gt=0)
    window: Duration | None = None
    scale_up_delay: Duration = 300
    scale_down_delay: Duration = 600

    @field_validator("window")
    @classmethod
    def _window_berth_keeps(cls, value: int | None) -> int | None:
        # Request counters live 11 minutes (shared.services.service_traffic); dstack's
        # longest is 10.
        if value is not None and not 1 <= value <= 600:
            raise ValueError(f"expected a window from 1s to 10m, got {value}s")
        return value


class IpAddressKey(BerthModel):
    """Rate-limit each client IP address on its own (dstack's default key)."""

    type: Literal["ip_address"] = "ip_address"


class HeaderKey(BerthModel):
    """Rate-limit each value of a request header on its own (e.g. ``Authorization``)."""

    type: Literal["header"]
    header: str = Field(pattern=r"^[a-zA-Z0-9-_]+$", max_length=500)


class RateLimit(BerthModel):
    """At most ``rps`` requests per second under ``prefix`` per key, ``burst`` more ahead.

    dstack's meaning (nginx's ``limit_req burst=N nodelay``): a request over the
    rate is answered 429 unless the burst allowance has room; the allowance refills
    at ``rps``. A request matching several prefixes counts under the longest.
    """

    prefix: str = Field("/", pattern=r"^/[^\s\\{}]*$", max_length=4094)
    key: Annotated[IpAddressKey | HeaderKey, Field(discriminator="type")] = IpAddressKey()
    rps: float = Field(ge=1 / 60)
    burst: int = Field(0, ge=0)


class ServiceModel(BerthModel):
    """The model a service exposes through an OpenAI-compatible API."""

    name: str = Field(min_length=1)
    type: Literal["chat"] = "chat"
    format: Literal["openai"] = "openai"
    prefix: str = "/v1"

    @field_validator("format", mode="before")
    @classmethod
    def _no_tgi(cls, value: Any) -> Any:
        if value == "tgi":
            raise not_supported(value="tgi")
        return value


def _service_model_from_yaml(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


ServiceModelField = Annotated[ServiceModel | None, BeforeValidator(_service_model_from_yaml)]


def _env_from_list(items: list[Any]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"env: expected KEY=VALUE or KEY, got {item!r}")
        key, sep, val = item.partition("=")
        _check_env_name(key)
        if key in env:
            raise ValueError(f"env: {key} is set twice")
        refuse_interpolation(val, key, secrets=True)
        env[key] = val if sep else None
    return env


def _check_env_name(key: object) -> None:
    if not isinstance(key, str) or _ENV_NAME_RE.fullmatch(key) is None:
        raise ValueError(
            f"env: invalid variable name {key!r}: expected letters, digits and _,"
            " not starting with a digit"
        )


def _absolute_path(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"expected an absolute container path such as /data, got {value!r}")
    return value
