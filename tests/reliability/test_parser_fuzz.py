"""hypothesis against the configuration parser: whatever comes in, only ConfigError goes out.

Pure (no services): text of any shape, and mappings built from the real field
names with values of any JSON type, through every public door of
``shared.configuration``, including the resources grammar (``gpu: A100:80GB:2``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.configuration import (
    configuration_from_mapping,
    parse_configuration,
    parse_fleet_configuration,
    parse_run_configuration,
    server_config_from_text,
)
from shared.errors import ConfigError

FIELDS = [
    "type", "name", "commands", "resources", "gpu", "cpu", "memory", "disk", "shm_size",
    "env", "ports", "nodes", "replicas", "image", "registry_auth", "username", "password",
    "python", "max_duration", "retry", "on_events", "duration", "volumes", "fleets",
    "priority", "port", "shell", "working_dir", "privileged", "ide", "init", "model",
    "scaling", "auth", "placement", "projects", "backends", "kubeconfig", "namespace",
    "proxy_jump", "hostname", "inactivity_duration", "spot_policy", "utilization_policy",
]  # fmt: skip
TYPES = ["task", "service", "dev-environment", "fleet", "gateway", "volume", "nope"]
GRAMMAR = ["A100", "H100", "80GB", "24GB..", "..", ":", "2", "1..8", "nvidia", "amd",
           "4..", "GB", "MB", "-1", "0", "x", " ", "Ti", "gpu", "tpu-v3"]  # fmt: skip

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
grammar_text = st.lists(st.sampled_from(GRAMMAR), max_size=6).map("".join)
values: st.SearchStrategy[Any] = st.recursive(
    scalars | grammar_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
configurations = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={f: values for f in FIELDS if f != "type"},
)
_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


def _only_config_errors(parse: Callable[[], object]) -> None:
    # The one failure the parser may raise; anything else fails the test.
    with contextlib.suppress(ConfigError):
        parse()


@_FUZZ
@given(st.text(max_size=300))
def test_any_text_gives_a_configuration_or_a_config_error(text: str) -> None:
    _only_config_errors(lambda: parse_configuration(text))
    _only_config_errors(lambda: parse_run_configuration(text))
    _only_config_errors(lambda: parse_fleet_configuration(text))
    _only_config_errors(lambda: server_config_from_text(text))


@_FUZZ
@given(configurations)
def test_any_mapping_gives_a_configuration_or_a_config_error(data: dict[str, Any]) -> None:
    _only_config_errors(lambda: configuration_from_mapping(data))
    text = yaml.safe_dump(data)
    _only_config_errors(lambda: parse_configuration(text))


@_FUZZ
@given(
    gpu=grammar_text | scalars,
    cpu=grammar_text | scalars,
    memory=grammar_text | scalars,
    disk=grammar_text | scalars,
)
def test_any_resources_text_gives_resources_or_a_config_error(
    gpu: Any, cpu: Any, memory: Any, disk: Any
) -> None:
    resources = {"gpu": gpu, "cpu": cpu, "memory": memory, "disk": disk}
    conf = {"type": "task", "commands": ["x"], "resources": resources}
    _only_config_errors(lambda: configuration_from_mapping(conf))


@_FUZZ
@given(st.lists(st.sampled_from(["&a ", "*a", "[", "]", "{", "}", ", ", "x", ": ", "\n", "- "])))
@example(["{", "{", "}", "}"])  # a mapping as a key (CI, 2026-12-07: TypeError, not ConfigError)
def test_any_anchor_and_bracket_soup_gives_a_config_error_at_worst(parts: list[str]) -> None:
    text = "type: task\ncommands: " + "".join(parts)
    _only_config_errors(lambda: parse_run_configuration(text))
