"""The public doors: YAML text (or an already-decoded mapping) in, a configuration out.

Every failure leaves as a :class:`~shared.errors.ConfigError` (or its subclass
:class:`~shared.errors.NotSupportedError`) whose ``field`` is the dotted YAML path;
pydantic's and PyYAML's exceptions never escape. ``type`` is checked here, before
pydantic, so a missing, unknown or not-yet-supported type gets a sentence of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, cast

from pydantic import Field, ValidationError

from shared.configuration.base import (
    READING_STORED,
    STORED,
    BerthModel,
    config_error_from_validation,
    load_yaml_mapping,
)
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.runs import (
    RUN_CONFIGURATION_TYPES,
    AnyRunConfiguration,
    DevEnvironmentConfiguration,
    ServiceConfiguration,
    TaskConfiguration,
)
from shared.configuration.volumes import VolumeConfiguration
from shared.errors import ConfigError, NotSupportedError

AnyConfiguration = Annotated[
    TaskConfiguration
    | DevEnvironmentConfiguration
    | ServiceConfiguration
    | FleetConfiguration
    | VolumeConfiguration,
    Field(discriminator="type"),
]
"""Anything ``berth apply -f`` accepts, told apart by ``type``."""

CONFIGURATION_TYPES: dict[str, type[BerthModel]] = {
    **RUN_CONFIGURATION_TYPES,
    "fleet": FleetConfiguration,
    "volume": VolumeConfiguration,
}
# dstack configuration types Berth has no counterpart for yet.
_TYPES_NOT_SUPPORTED = frozenset({"gateway"})


def parse_configuration(text: str, *, source: str | None = None) -> AnyConfiguration:
    """Parse a ``.dstack.yml`` of any supported type; ``source`` names the file in errors."""
    return configuration_from_mapping(load_yaml_mapping(text, source=source), source=source)


def parse_run_configuration(text: str, *, source: str | None = None) -> AnyRunConfiguration:
    """Parse a task, dev-environment or service; any other type is a ConfigError."""
    data = load_yaml_mapping(text, source=source)
    _require_type(data, allowed=RUN_CONFIGURATION_TYPES, source=source)
    return cast(AnyRunConfiguration, configuration_from_mapping(data, source=source))


def parse_fleet_configuration(text: str, *, source: str | None = None) -> FleetConfiguration:
    """Parse a ``type: fleet`` configuration; any other type is a ConfigError."""
    data = load_yaml_mapping(text, source=source)
    _require_type(data, allowed={"fleet": FleetConfiguration}, source=source)
    return cast(FleetConfiguration, configuration_from_mapping(data, source=source))


def parse_volume_configuration(text: str, *, source: str | None = None) -> VolumeConfiguration:
    """Parse a ``type: volume`` configuration; any other type is a ConfigError."""
    data = load_yaml_mapping(text, source=source)
    _require_type(data, allowed={"volume": VolumeConfiguration}, source=source)
    return cast(VolumeConfiguration, configuration_from_mapping(data, source=source))


def configuration_from_mapping(
    data: dict[str, Any], *, source: str | None = None
) -> AnyConfiguration:
    """Validate an already-decoded configuration mapping (e.g. a JSON request body)."""
    model = _require_type(data, allowed=CONFIGURATION_TYPES, source=source)
    try:
        return cast(AnyConfiguration, model.model_validate(data))
    except ValidationError as e:
        raise config_error_from_validation(e, source=source, data=data) from e


def configuration_from_stored(data: Mapping[str, Any]) -> AnyConfiguration:
    """Rebuild a configuration Berth stored (``model_dump(mode="json")``).

    Unknown keys are dropped rather than refused, so this reader survives data
    written by a newer Berth; anything else invalid is still a ConfigError.
    """
    model = _require_type(data, allowed=CONFIGURATION_TYPES, source="stored configuration")
    token = READING_STORED.set(True)
    try:
        return cast(AnyConfiguration, model.model_validate(dict(data), context={STORED: True}))
    except ValidationError as e:
        raise config_error_from_validation(e, source="stored configuration") from e
    finally:
        READING_STORED.reset(token)


def _require_type(
    data: Mapping[str, Any], *, allowed: Mapping[str, type[BerthModel]], source: str | None
) -> type[BerthModel]:
    where = f" (in {source})" if source else ""
    expected = ", ".join(allowed)
    kind = data.get("type")
    if kind is None:
        raise ConfigError(
            f"required field is missing; expected one of {expected}{where}", field="type"
        )
    if isinstance(kind, str) and kind in _TYPES_NOT_SUPPORTED:
        raise NotSupportedError(f"not supported by Berth yet: type: {kind}{where}", field="type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ConfigError(f"got {kind!r}; expected one of {expected}{where}", field="type")
    return allowed[kind]
