"""Run and fleet configurations in dstack's ``.dstack.yml`` format, and their errors."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from shared.configuration.fleets import (
    FLEET_FIELDS_NOT_SUPPORTED,
    FLEET_REFUSAL_REASONS,
    FleetConfiguration,
)
from shared.configuration.parse import (
    AnyConfiguration,
    configuration_from_mapping,
    configuration_from_stored,
    parse_configuration,
    parse_fleet_configuration,
    parse_run_configuration,
)
from shared.configuration.ranges import Range
from shared.configuration.resources import GPUSpec
from shared.configuration.runs import (
    RUN_FIELDS_NOT_SUPPORTED,
    AnyRunConfiguration,
    DevEnvironmentConfiguration,
    ServiceConfiguration,
    TaskConfiguration,
)
from shared.errors import ConfigError, NotSupportedError

EXAMPLES = sorted((Path(__file__).parent / "dstack_examples").glob("*.yml"))


def _parse(text: str) -> Any:
    return parse_configuration(textwrap.dedent(text))


def _task(text: str = "") -> TaskConfiguration:
    conf = _parse("type: task\ncommands: [echo hi]\n" + textwrap.dedent(text))
    assert isinstance(conf, TaskConfiguration)
    return conf


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return caught.value


# --- the example files -----------------------------------------------------------------


def test_there_are_examples_of_every_configuration_type() -> None:
    kinds = {path.name.split("-")[0] for path in EXAMPLES}
    assert kinds == {"task", "dev", "service", "fleet"}
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses_to_the_type_its_file_name_says(path: Path) -> None:
    conf = parse_configuration(path.read_text(), source=str(path))
    assert path.name.startswith(conf.type)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_survives_storage_as_json_unchanged(path: Path) -> None:
    conf = parse_configuration(path.read_text())
    stored = yaml.safe_load(yaml.safe_dump(conf.model_dump(mode="json")))
    assert configuration_from_stored(stored) == conf


def test_the_two_node_example_is_a_distributed_task_with_gpus_per_node() -> None:
    conf = parse_run_configuration((EXAMPLES[0].parent / "task-two-nodes.dstack.yml").read_text())
    assert isinstance(conf, TaskConfiguration)
    assert conf.nodes == 2
    assert str(conf.resources.gpu) == "24GB:1..2"
    assert conf.env == {"NCCL_DEBUG": "INFO", "HF_TOKEN": None}


def test_the_h100_example_asks_for_eight_h100s_and_retries_for_four_hours() -> None:
    conf = parse_run_configuration((EXAMPLES[0].parent / "task-h100x8.dstack.yml").read_text())
    assert conf.resources.gpu == GPUSpec(name=["H100"], count=Range[int](min=8, max=8))
    assert conf.retry is not None
    assert (conf.retry.on_events, conf.retry.duration) == (["no-capacity", "interruption"], 14400)
    assert (conf.max_duration, conf.priority, conf.spot_policy) == (86400, 80, "auto")


# --- tasks ---------------------------------------------------------------------------------


def test_a_minimal_task_gets_one_node_default_resources_and_no_limits() -> None:
    conf = _task()
    assert (conf.nodes, conf.priority, conf.max_duration, conf.retry) == (1, 0, None, None)
    assert str(conf.resources) == "cpu=2.. memory=8GB.. disk=100GB.."


def test_a_task_needs_commands_or_an_image() -> None:
    error = _error("type: task\nname: empty-task")
    assert error.field == "commands"
    assert "either commands or image must be set" in error.message


def test_an_image_alone_runs_its_entrypoint() -> None:
    assert _parse("type: task\nimage: busybox").commands == []


@pytest.mark.parametrize(
    ("text", "field"),
    [("nodes: 0", "nodes"), ("nodes: true", "nodes"), ("priority: 101", "priority")],
)
def test_out_of_range_numbers_name_their_field(text: str, field: str) -> None:
    assert _error(f"type: task\nimage: x\n{text}").field == field


@pytest.mark.parametrize(
    "env",
    [
        "env: [A=1, B=x=y, EMPTY=]",
        "env: {A: 1, B: x=y, EMPTY: ''}",
    ],
)
def test_env_as_a_list_or_a_mapping_becomes_the_same_dict(env: str) -> None:
    assert _task(env).env == {"A": "1", "B": "x=y", "EMPTY": ""}


def test_a_bare_env_name_is_left_for_the_submitter_to_fill() -> None:
    conf = _task("env: [HF_TOKEN, A=1]")
    assert conf.env["HF_TOKEN"] is None
    assert conf.env_from_submitter == ["HF_TOKEN"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("env: [A=1, A=2]", "A is set twice"),
        ("env: ['1A=x']", "invalid variable name '1A'"),
        ("env: {DEBUG: true}", "quote it"),
    ],
)
def test_bad_env_entries_are_refused_with_the_reason(env: str, message: str) -> None:
    error = _error(f"type: task\nimage: x\n{env}")
    assert error.field == "env"
    assert message in error.message


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("600", 600)],
)
def test_max_duration_accepts_dstack_duration_units(written: str, seconds: int) -> None:
    assert _task(f"max_duration: {written}").max_duration == seconds


@pytest.mark.parametrize("written", ["off", "false", "'off'"])
def test_max_duration_off_means_no_limit(written: str) -> None:
    assert _task(f"max_duration: {written}").max_duration is None


def test_a_bad_duration_says_what_units_are_accepted() -> None:
    error = _error("type: task\nimage: x\nmax_duration: 2 hours")
    assert error.field == "max_duration"
    assert error.message == (
        "cannot parse '2 hours': expected a duration such as 90s, 30m, 2h, 1d, 1w"
        " or a number of seconds, or off"
    )


def test_retry_true_retries_on_every_event_for_an_hour() -> None:
    retry = _task("retry: true").retry
    assert retry is not None
    assert (sorted(retry.on_events), retry.duration) == (
        ["error", "interruption", "no-capacity"],
        3600,
    )


def test_retry_false_never_retries() -> None:
    assert _task("retry: false").retry is None


def test_retry_refuses_an_unknown_event() -> None:
    assert _error("type: task\nimage: x\nretry: {on_events: [oom]}").field == "retry.on_events.0"


def test_python_written_as_the_yaml_float_3_10_means_python_3_10() -> None:
    assert _task("python: 3.10").python == "3.10"


def test_image_and_python_are_mutually_exclusive() -> None:
    error = _error("type: task\nimage: x\npython: '3.11'")
    assert (error.field, error.message) == (
        "python",
        "image and python are mutually exclusive: set one",
    )


def test_ports_accept_a_port_a_mapping_and_any_local_port() -> None:
    ports = _task("ports: [8501, '80:8080', '*:9000', 8080:22]").ports
    assert [str(p) for p in ports] == ["8501", "80:8080", "*:9000", "8080:22"]
    assert [p.container_port for p in ports] == [8501, 8080, 9000, 22]


def test_an_unquoted_port_mapping_is_not_read_as_a_base_60_number() -> None:
    # YAML 1.1 would read 8080:22 as 484822.
    assert _task("ports: [8080:22]").ports[0].local_port == 8080


def test_a_port_outside_1_to_65535_is_refused() -> None:
    assert _error("type: task\nimage: x\nports: [70000]").field == "ports.0.local_port"


def test_volumes_accept_name_path_strings_and_mappings() -> None:
    volumes = _task("volumes: ['data:/data', {name: ckpt, path: /ckpt, read_only: true}]").volumes
    assert [(v.name, v.path, v.read_only) for v in volumes] == [
        ("data", "/data", False),
        ("ckpt", "/ckpt", True),
    ]


def test_a_host_path_volume_parses_as_an_instance_mount() -> None:
    # Whether the project allows it is decided at submission (allow_host_volumes).
    (mount,) = _task("volumes: ['/mnt/data:/data']").volumes
    assert (mount.instance_path, mount.path, mount.is_instance) == ("/mnt/data", "/data", True)


def test_a_volume_path_must_be_absolute() -> None:
    error = _error("type: task\nimage: x\nvolumes: ['data:data']")
    assert (error.field, error.message) == (
        "volumes.0.path",
        "expected an absolute container path such as /data, got 'data'",
    )


@pytest.mark.parametrize("shell", ["sh", "bash", "/usr/bin/zsh"])
def test_shell_is_sh_bash_or_an_absolute_path(shell: str) -> None:
    assert _task(f"shell: {shell}").shell == shell


def test_a_relative_working_dir_is_refused_because_berth_clones_no_repo() -> None:
    assert _error("type: task\nimage: x\nworking_dir: src").field == "working_dir"


def test_a_run_name_must_be_a_valid_dstack_name() -> None:
    error = _error("type: task\nimage: x\nname: My_Run")
    assert error.field == "name"
    assert "lowercase letters" in error.message


def test_spot_policy_fleets_privileged_and_registry_auth_are_accepted() -> None:
    conf = _task(
        """
        spot_policy: spot
        fleets: [gpu-pool]
        privileged: true
        registry_auth: {username: robot, password: s3cret}
        """
    )
    assert (conf.spot_policy, conf.fleets, conf.privileged) == ("spot", ["gpu-pool"], True)


def test_a_fleet_of_another_project_is_not_supported_yet() -> None:
    error = _error("type: task\nimage: x\nfleets: [mine, team-a/shared]")
    assert isinstance(error, NotSupportedError)
    assert (error.field, error.message) == (
        "fleets.1",
        "not supported by Berth yet: fleets.1: team-a/shared (another project's fleet)",
    )


@pytest.mark.parametrize(
    ("text", "field", "expression"),
    [
        ("env: {TOKEN: 'abc${{ env.T }}def'}", "env.TOKEN", "${{ env.T }}"),
        ("env: ['A=${{ secrets.ok }}-${{ run.name }}']", "env.A", "${{ run.name }}"),
        (
            "registry_auth: {username: u, password: '${{ dstack.node_rank }}'}",
            "registry_auth.password",
            "${{ dstack.node_rank }}",
        ),
        (
            "volumes: [{name: 'data-${{ run.name }}', path: /data}]",
            "volumes.0.name",
            "${{ run.name }}",
        ),
        (
            "volumes: ['data-${{ dstack.node_rank }}-${{ run.id }}:/data']",
            "volumes.0.name",
            "${{ run.id }}",
        ),
    ],
)
def test_dstack_interpolation_is_not_supported_yet_and_shows_only_the_expression(
    text: str, field: str, expression: str
) -> None:
    error = _error(f"type: task\nimage: x\n{text}")
    assert isinstance(error, NotSupportedError)
    assert (error.field, error.message) == (
        field,
        f"not supported by Berth yet: {field}: {expression} (interpolation)",
    )


def test_project_secrets_are_accepted_in_env_and_registry_auth_and_kept_as_written() -> None:
    conf = _task(
        "image: x\nenv: ['HF_TOKEN=${{ secrets.hf_token }}', 'URL=s3://${{secrets.bucket}}/x']\n"
        "registry_auth: {username: '${{ secrets.ngc_user }}', password: '${{ secrets.ngc }}'}"
    )
    assert conf.env == {"HF_TOKEN": "${{ secrets.hf_token }}", "URL": "s3://${{secrets.bucket}}/x"}
    assert conf.registry_auth is not None
    assert conf.registry_auth.password.get_secret_value() == "${{ secrets.ngc }}"


def test_registry_auth_may_name_a_variable_of_the_runs_env_and_no_other() -> None:
    # dstack's NGC example: the key comes from the submitter's shell through env.
    conf = _task(
        "image: nvcr.io/x\nenv: [NGC_API_KEY]\n"
        "registry_auth: {username: $oauthtoken, password: '${{ env.NGC_API_KEY }}'}"
    )
    assert conf.registry_auth is not None
    assert conf.registry_auth.env_names() == {"NGC_API_KEY"}
    error = _error(
        "type: task\ncommands: [x]\nimage: y\n"
        "registry_auth: {username: u, password: '${{ env.MISSING }}'}"
    )
    assert error.field == "registry_auth"
    assert "${{ env.MISSING }} names no variable of the run's env" in error.message


def test_interpolation_in_a_probe_header_is_not_supported_yet() -> None:
    error = _error(
        "type: service\ncommands: [x]\nport: 8000\n"
        "probes: [{type: http, headers: [{name: X-Key, value: '${{ env.KEY }}'}]}]"
    )
    assert isinstance(error, NotSupportedError)
    assert error.field == "probes.0.headers.0.value"


def test_a_registry_password_never_prints_but_survives_storage() -> None:
    conf = _task("image: x\nregistry_auth: {username: robot, password: s3cret}")
    assert "s3cret" not in repr(conf)
    assert "s3cret" not in str(conf)
    stored = conf.model_dump(mode="json")
    assert stored["registry_auth"]["password"] == "s3cret"
    restored = configuration_from_stored(stored)
    assert isinstance(restored, TaskConfiguration)
    assert restored.registry_auth is not None
    assert restored.registry_auth.password.get_secret_value() == "s3cret"


# --- dev environments ----------------------------------------------------------------------


def test_a_dev_environment_takes_an_ide_init_commands_and_an_inactivity_limit() -> None:
    conf = _parse(
        """
        type: dev-environment
        ide: vscode
        init: [pip install -r requirements.txt]
        inactivity_duration: 2h
        """
    )
    assert isinstance(conf, DevEnvironmentConfiguration)
    assert (conf.ide, conf.init, conf.inactivity_duration) == (
        "vscode",
        ["pip install -r requirements.txt"],
        7200,
    )


def test_the_zed_ide_is_not_supported_yet() -> None:
    error = _error("type: dev-environment\nide: zed")
    assert isinstance(error, NotSupportedError)
    assert error.message == "not supported by Berth yet: ide: zed"


def test_an_unknown_ide_lists_the_accepted_ones() -> None:
    error = _error("type: dev-environment\nide: emacs")
    assert error.message == "Input should be 'vscode', 'cursor' or 'windsurf', got 'emacs'"


def test_a_dev_environment_has_no_commands() -> None:
    error = _error("type: dev-environment\ncommands: [x]")
    assert error.field == "commands"
    assert error.message.startswith("unknown field; accepted fields:")


# --- services ------------------------------------------------------------------------------


def _service(text: str) -> ServiceConfiguration:
    conf = _parse("type: service\ncommands: [serve]\n" + textwrap.dedent(text))
    assert isinstance(conf, ServiceConfiguration)
    return conf


@pytest.mark.parametrize(("written", "port"), [("8000", 8000), ("'80:8000'", 8000)])
def test_a_service_port_is_the_container_port_in_either_form(written: str, port: int) -> None:
    assert _service(f"port: {written}").port == port


def test_a_service_port_in_dstacks_mapping_form_uses_the_container_port() -> None:
    assert _service("port: {local_port: 80, container_port: 8000}").port == 8000


def test_a_service_port_mapping_without_a_container_port_is_refused() -> None:
    error = _error("type: service\ncommands: [x]\nport: {}")
    assert (error.field, error.message) == ("port", "Input should be a valid integer, got {}")


def test_a_service_needs_a_port() -> None:
    error = _error("type: service\ncommands: [serve]")
    assert (error.field, error.message) == ("port", "required field is missing")


def test_a_fixed_replica_count_needs_no_scaling() -> None:
    conf = _service("port: 8000\nreplicas: 2")
    assert conf.replicas == Range[int](min=2, max=2)
    assert conf.auth is True


def test_a_replica_range_with_scaling_rules_is_accepted() -> None:
    conf = _service("port: 8000\nreplicas: 0..4\nscaling: {metric: rps, target: 10}")
    assert str(conf.replicas) == "0..4"
    assert conf.scaling is not None
    assert (conf.scaling.scale_up_delay, conf.scaling.scale_down_delay) == (300, 600)


def test_a_replica_range_without_scaling_rules_is_refused() -> None:
    error = _error("type: service\ncommands: [x]\nport: 8000\nreplicas: 1..4")
    assert (error.field, error.message) == (
        "replicas",
        "a range (1..4) needs scaling rules in `scaling` too",
    )


def test_replicas_need_an_upper_bound() -> None:
    error = _error("type: service\ncommands: [x]\nport: 8000\nreplicas: 1..")
    assert error.field == "replicas"
    assert "needs an upper bound" in error.message


def test_a_model_name_becomes_an_openai_chat_model() -> None:
    model = _service("port: 8000\nmodel: meta-llama/Llama-3.1-8B").model
    assert model is not None
    assert (model.name, model.type, model.format, model.prefix) == (
        "meta-llama/Llama-3.1-8B",
        "chat",
        "openai",
        "/v1",
    )


def test_a_tgi_model_format_is_not_supported_yet() -> None:
    error = _error("type: service\ncommands: [x]\nport: 8000\nmodel: {name: m, format: tgi}")
    assert isinstance(error, NotSupportedError)
    assert error.message == "not supported by Berth yet: model.format: tgi"


def test_probes_take_dstacks_defaults() -> None:
    conf = _service("port: 8000\nprobes: [{type: http, url: /health}]")
    assert conf.probes is not None
    probe = conf.probes[0]
    assert (probe.url, probe.method, probe.timeout, probe.interval, probe.ready_after) == (
        "/health",
        "get",
        10,
        15,
        1,
    )


def test_a_probe_with_a_method_other_than_get_is_not_supported_yet() -> None:
    error = _error("type: service\ncommands: [x]\nport: 8000\nprobes: [{type: http, method: post}]")
    assert isinstance(error, NotSupportedError)
    assert (error.field, error.message) == (
        "probes.0.method",
        "not supported by Berth yet: probes.0.method: post",
    )


def test_gateway_false_is_accepted_because_berths_proxy_serves_every_service() -> None:
    conf = _parse("type: service\ncommands: [x]\nport: 8000\ngateway: false")
    assert isinstance(conf, ServiceConfiguration)
    assert conf.gateway is False
    assert configuration_from_stored(conf.model_dump(mode="json")) == conf


@pytest.mark.parametrize(("written", "shown"), [("true", "true"), ("team-a/gw", "team-a/gw")])
def test_a_gateway_is_not_supported_yet(written: str, shown: str) -> None:
    error = _error(f"type: service\ncommands: [x]\nport: 8000\ngateway: {written}")
    assert isinstance(error, NotSupportedError)
    assert error.field == "gateway"
    assert error.message.startswith(f"not supported by Berth yet: gateway: {shown} (")
    assert "it runs no gateways" in error.message


# --- fleets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "low", "high"),
    [("2", 2, 2), ("0..", 0, None), ("1..4", 1, 4), ("{min: 1, max: 3}", 1, 3)],
)
def test_fleet_nodes_are_a_count_or_a_range(nodes: str, low: int, high: int | None) -> None:
    conf = parse_fleet_configuration(f"type: fleet\nnodes: {nodes}")
    assert (conf.nodes.min, conf.nodes.max, conf.nodes.target) == (low, high, None)


def test_a_fleet_takes_placement_backends_and_resources() -> None:
    conf = parse_fleet_configuration(
        "type: fleet\nname: pool\nnodes: 0..\nplacement: cluster\nbackends: [kubernetes]\n"
        "resources: {gpu: H100:8}"
    )
    assert (conf.placement, conf.backends, str(conf.resources.gpu)) == (
        "cluster",
        ["kubernetes"],
        "H100:8",
    )


def test_a_fleet_needs_nodes() -> None:
    assert _error("type: fleet\nname: pool").field == "nodes"


def test_a_fleet_takes_any_dstack_backend_as_the_cloud_its_nodes_run_on() -> None:
    conf = parse_fleet_configuration("type: fleet\nnodes: 1\nbackends: [kubernetes, gcp]")
    assert conf.backends == ["kubernetes", "gcp"]


def test_a_fleet_backend_dstack_does_not_know_is_an_error() -> None:
    error = _error("type: fleet\nnodes: 1\nbackends: [kubernets]")
    assert not isinstance(error, NotSupportedError)
    assert error.field == "backends.0"
    assert error.message.startswith("'kubernets' is not a dstack backend; expected one of")


# --- fields Berth refuses, unknown fields, types -------------------------------------------

_MINIMAL = {
    "task": "type: task\nimage: x\n",
    "dev-environment": "type: dev-environment\n",
    "service": "type: service\nimage: x\nport: 8000\n",
}


@pytest.mark.parametrize("kind", sorted(_MINIMAL))
@pytest.mark.parametrize("field", sorted(RUN_FIELDS_NOT_SUPPORTED))
def test_a_dstack_run_field_berth_does_not_honour_is_refused_by_name(kind: str, field: str) -> None:
    error = _error(_MINIMAL[kind] + f"{field}: whatever\n")
    assert isinstance(error, NotSupportedError)
    assert (error.field, error.message) == (field, f"not supported by Berth yet: {field}")


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("dev-environment", "version"),
        ("service", "https"),
    ],
)
def test_type_specific_dstack_fields_are_refused_by_name(kind: str, field: str) -> None:
    error = _error(_MINIMAL[kind] + f"{field}: whatever\n")
    assert isinstance(error, NotSupportedError)
    assert error.message == f"not supported by Berth yet: {field}"


@pytest.mark.parametrize("field", sorted(FLEET_FIELDS_NOT_SUPPORTED))
def test_a_dstack_fleet_field_berth_does_not_honour_is_refused_by_name(field: str) -> None:
    error = _error(f"type: fleet\nnodes: 1\n{field}: whatever\n")
    assert isinstance(error, NotSupportedError)
    # A key with no meaning on Kubernetes says why, after its name.
    why = f": {FLEET_REFUSAL_REASONS[field]}" if field in FLEET_REFUSAL_REASONS else ""
    assert error.message == f"not supported by Berth yet: {field}{why}"


def test_a_nested_dstack_field_is_refused_with_its_dotted_path() -> None:
    error = _error("type: task\nimage: x\nresources: {gpu: {name: A100, compute_capability: 8.0}}")
    assert isinstance(error, NotSupportedError)
    assert error.field == "resources.gpu.compute_capability"
    assert error.message == "not supported by Berth yet: resources.gpu.compute_capability"


def test_an_unknown_field_lists_the_accepted_fields_and_suggests_the_closest() -> None:
    error = _error("type: task\ncomands: [echo]")
    assert error.field == "comands"
    assert error.message.startswith("unknown field (did you mean commands?); accepted fields: ")
    assert "nodes" in error.message
    assert not isinstance(error, NotSupportedError)


def test_an_unknown_nested_field_has_a_dotted_path() -> None:
    error = _error("type: task\nimage: x\nresources: {gpu: {colour: green}}")
    assert error.field == "resources.gpu.colour"
    assert "accepted fields: count, memory, name, total_memory, vendor" in error.message


def test_a_bad_gpu_shorthand_is_reported_at_resources_gpu() -> None:
    error = _error("type: task\nimage: x\nresources:\n  gpu: A100:banana\n")
    assert str(error).startswith(
        "resources.gpu: cannot parse 'A100:banana': expected NAME[:MEMORY][:COUNT]"
        " such as A100:80GB:2"
    )


def test_several_problems_are_all_mentioned_in_one_error() -> None:
    error = _error("type: task\nimage: x\nnodes: 0\npriority: 101")
    assert error.field == "nodes"
    assert "also priority:" in error.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x", "required field is missing; expected one of task, dev-environment"),
        ("type: job", "got 'job'; expected one of task, dev-environment, service, fleet"),
    ],
)
def test_a_missing_or_unknown_type_is_reported_at_type(text: str, message: str) -> None:
    error = _error(text)
    assert error.field == "type"
    assert error.message.startswith(message)


@pytest.mark.parametrize(("text", "field"), [("type: {a: 1}", "type"), ("type: [task]", "type")])
def test_a_type_that_is_not_a_word_is_reported_at_type(text: str, field: str) -> None:
    assert _error(text).field == field


def test_an_ide_that_is_not_a_word_is_reported_at_ide() -> None:
    assert _error("type: dev-environment\nide: {name: vscode}").field == "ide"


@pytest.mark.parametrize("kind", ["gateway"])
def test_dstack_configuration_types_berth_lacks_are_not_supported(kind: str) -> None:
    error = _error(f"type: {kind}\nname: x")
    assert isinstance(error, NotSupportedError)
    assert error.message == f"not supported by Berth yet: type: {kind}"


def test_the_run_parser_refuses_a_fleet_and_the_fleet_parser_refuses_a_task() -> None:
    with pytest.raises(ConfigError, match="got 'fleet'; expected one of task"):
        parse_run_configuration("type: fleet\nnodes: 1")
    with pytest.raises(ConfigError, match="got 'task'; expected one of fleet"):
        parse_fleet_configuration("type: task\nimage: x")


# --- YAML ----------------------------------------------------------------------------------


def test_a_yaml_syntax_error_reports_its_line_and_column() -> None:
    error = _error("type: task\ncommands:\n  - echo [\n  - oops: : :\n")
    assert error.field is None
    assert error.message.startswith("invalid YAML at line 4, column ")


def test_a_yaml_syntax_error_names_the_file_when_given() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run_configuration("type: task\n  image: [", source="train.dstack.yml")
    assert "invalid YAML in train.dstack.yml at line 2, column 8" in caught.value.message


def test_a_duplicate_key_is_an_error_at_its_line() -> None:
    error = _error("type: task\nimage: a\nimage: b\n")
    assert error.message == "invalid YAML at line 3, column 1: duplicate key 'image'"


@pytest.mark.parametrize(("value", "column"), [("{{}}", 12), ("[{[]: 1}]", 13)])
def test_a_mapping_or_list_as_a_key_is_an_error_at_its_place(value: str, column: int) -> None:
    # Found by the parser fuzz (CI, 2026-12-07): the duplicate-key check hashed every
    # key, and a mapping or list as a key raised TypeError instead of a ConfigError.
    error = _error(f"type: task\ncommands: {value}\n")
    assert error.message == f"invalid YAML at line 2, column {column}: found unhashable key"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "the configuration is empty"), ("- a\n- b\n", "expected a mapping of fields")],
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, message: str) -> None:
    assert _error(text).message.startswith(message)


def test_a_source_file_is_named_at_the_end_of_validation_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run_configuration("type: task\nimage: x\nnodes: 0", source="a.dstack.yml")
    assert caught.value.message.endswith("(in a.dstack.yml)")


# --- unions, mappings, storage -------------------------------------------------------------


def test_the_run_union_tells_types_apart_by_their_type_field() -> None:
    adapter: TypeAdapter[AnyRunConfiguration] = TypeAdapter(AnyRunConfiguration)
    conf = adapter.validate_python({"type": "service", "image": "x", "port": 80})
    assert isinstance(conf, ServiceConfiguration)


def test_the_configuration_union_includes_fleets() -> None:
    adapter: TypeAdapter[AnyConfiguration] = TypeAdapter(AnyConfiguration)
    assert isinstance(
        adapter.validate_python({"type": "fleet", "nodes": "0.."}), FleetConfiguration
    )


def test_an_already_decoded_mapping_validates_like_yaml() -> None:
    conf = configuration_from_mapping({"type": "task", "image": "x", "nodes": 3})
    assert isinstance(conf, TaskConfiguration)
    assert conf.nodes == 3


def test_stored_data_from_a_newer_berth_loses_unknown_fields_instead_of_failing() -> None:
    stored = _task("nodes: 2").model_dump(mode="json")
    stored["added_later"] = True
    stored["resources"]["gpu_partition"] = "1g.10gb"
    assert configuration_from_stored(stored) == _task("nodes: 2")


def test_parsed_configurations_are_frozen() -> None:
    conf = _task()
    with pytest.raises(ValueError, match="frozen"):
        conf.nodes = 3  # type: ignore[misc]


_FIELD_NAMES = ["type", "name", "image", "commands", "nodes", "resources", "env", "port", "ports"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@settings(deadline=None, max_examples=200)
@given(
    st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=6), _json, max_size=5),
    st.sampled_from(["task", "dev-environment", "service", "fleet"]),
)
def test_any_malformed_mapping_fails_only_with_a_config_error(
    data: dict[str, Any], kind: str
) -> None:
    with contextlib.suppress(ConfigError):
        configuration_from_mapping({**data, "type": kind})


def test_runs_stored_before_a_value_form_was_refused_still_load() -> None:
    # What an older Berth accepted and stored: newer refusals must not strand it.
    stored = {
        "type": "task",
        "name": "old",
        "commands": ["train"],
        "env": {"TOKEN": "${{ secrets.hf_token }}"},
        "fleets": ["team-a/gpus"],
    }
    with pytest.raises(NotSupportedError):
        parse_run_configuration(yaml.safe_dump(stored))
    loaded = configuration_from_stored(stored)
    assert isinstance(loaded, TaskConfiguration)
    assert loaded.env == {"TOKEN": "${{ secrets.hf_token }}"}
    assert loaded.fleets == ["team-a/gpus"]
    with pytest.raises(NotSupportedError):  # refused again once the stored read is over
        parse_run_configuration(yaml.safe_dump(stored))
