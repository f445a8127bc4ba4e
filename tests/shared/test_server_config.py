"""The server configuration file: projects, Kubernetes backends, and its errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shared.configuration.server import (
    KubeContext,
    ProxyJump,
    ServerConfig,
    load_server_config,
    server_config_from_text,
)
from shared.errors import ConfigError, NotSupportedError

DOCUMENTED = """\
projects:
  - name: main
    backends:
      - type: kubernetes
        kubeconfig:
          filename: ~/.kube/config
        contexts: [ctx-a, {name: ctx-b, proxy_jump: {hostname: 10.0.0.5, port: 32000}}]
        namespace: berth
        proxy_jump:
          hostname: 203.0.113.10
          port: 32000
"""

INLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
current-context: c
"""


def _backend_yaml(body: str) -> str:
    return (
        "projects:\n  - name: main\n    backends:\n      - "
        + textwrap.indent(textwrap.dedent(body).strip(), "        ").lstrip()
    )


def _load(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_server_config(path)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return caught.value


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = _load(tmp_path, DOCUMENTED)
    backend = config.projects[0].backends[0]
    assert config.project_names() == ["main"]
    assert backend.kubeconfig.path() == Path("~/.kube/config")
    assert backend.namespace == "berth"
    assert backend.contexts == [
        KubeContext(name="ctx-a"),
        KubeContext(name="ctx-b", proxy_jump=ProxyJump(hostname="10.0.0.5", port=32000)),
    ]


def test_a_context_without_its_own_jump_host_uses_the_backends(tmp_path: Path) -> None:
    config = _load(tmp_path, DOCUMENTED)
    a, b = (config.backend_for("main", name) for name in ("ctx-a", "ctx-b"))
    assert a.jump_host_for("ctx-a") == ProxyJump(hostname="203.0.113.10", port=32000)
    assert b.jump_host_for("ctx-b") == ProxyJump(hostname="10.0.0.5", port=32000)


def test_each_listed_context_is_one_cluster_of_the_project_in_order(tmp_path: Path) -> None:
    config = _load(tmp_path, DOCUMENTED)
    clusters = config.clusters_of("main")
    assert [c.cluster_name() for c in clusters] == ["ctx-a", "ctx-b"]
    assert [c.context_name() for c in clusters] == ["ctx-a", "ctx-b"]
    # Each is a cluster of its own: its own key, the backend's namespace and settings.
    assert len({c.cluster_key() for c in clusters}) == 2
    assert {c.namespace for c in clusters} == {"berth"}
    # Without a name, the first: where every placement made before clusters had names runs.
    assert config.backend_for("main").context_name() == "ctx-a"


def test_a_cluster_the_project_does_not_have_is_refused_naming_those_it_has(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, DOCUMENTED).backend_for("main", "ctx-c")
    assert "no cluster 'ctx-c'" in caught.value.message
    assert "['ctx-a', 'ctx-b']" in caught.value.message


def test_two_backends_on_the_current_context_are_refused_as_one_cluster_named_twice() -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: a.yml}") + (
        "\n      - type: kubernetes\n        kubeconfig: {filename: b.yml}\n"
    )
    with pytest.raises(ConfigError) as caught:
        server_config_from_text(text)
    assert caught.value.field == "projects.0.backends"
    assert "repeated: ['default']" in caught.value.message


def test_two_backends_with_named_contexts_are_two_clusters() -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: a.yml}\ncontexts: [east]") + (
        "\n      - type: kubernetes\n        kubeconfig: {filename: b.yml}\n"
        "        contexts: [west]\n"
    )
    config = server_config_from_text(text)
    assert [c.cluster_name() for c in config.clusters_of("main")] == ["east", "west"]
    assert config.backend_for("main", "west").kubeconfig.filename == "b.yml"


def test_without_contexts_the_kubeconfigs_current_context_is_used() -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: kc.yml}")
    backend = server_config_from_text(text).backend_for("main")
    assert backend.context_name() is None
    assert backend.namespace == "default"
    assert backend.proxy_jump is None


def test_inline_kubeconfig_data_is_parsed_into_a_mapping() -> None:
    text = _backend_yaml(
        "type: kubernetes\nkubeconfig:\n  data: |\n" + textwrap.indent(INLINE_KUBECONFIG, "    ")
    )
    kubeconfig = server_config_from_text(text).backend_for("main").kubeconfig
    assert kubeconfig.path() is None
    data = kubeconfig.parsed_data()
    assert data is not None
    assert data["current-context"] == "c"


def test_inline_kubeconfig_data_that_is_not_a_mapping_fails_at_load(tmp_path: Path) -> None:
    error = _error(tmp_path, _backend_yaml("type: kubernetes\nkubeconfig: {data: just-a-string}"))
    assert error.field == "projects.0.backends.0.kubeconfig"
    assert "data must be a kubeconfig mapping, got str" in error.message


@pytest.mark.parametrize(
    ("kubeconfig", "given"),
    [("{filename: a, data: b}", "both"), ("{}", "neither")],
)
def test_the_kubeconfig_needs_exactly_one_of_filename_or_data(
    tmp_path: Path, kubeconfig: str, given: str
) -> None:
    error = _error(tmp_path, _backend_yaml(f"type: kubernetes\nkubeconfig: {kubeconfig}"))
    assert error.field == "projects.0.backends.0.kubeconfig"
    assert error.message == (
        f"set exactly one of filename or data, got {given} (in {tmp_path / 'config.yml'})"
    )


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_jump_host_port_must_be_between_1_and_65535(tmp_path: Path, port: int) -> None:
    text = _backend_yaml(
        f"type: kubernetes\nkubeconfig: {{filename: kc}}\nproxy_jump: {{hostname: h, port: {port}}}"
    )
    error = _error(tmp_path, text)
    assert error.field == "projects.0.backends.0.proxy_jump.port"
    assert f"got {port}" in error.message


def test_a_jump_host_needs_a_hostname(tmp_path: Path) -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: kc}\nproxy_jump: {port: 22}")
    error = _error(tmp_path, text)
    assert error.field == "projects.0.backends.0.proxy_jump.hostname"
    assert error.message.startswith("required field is missing")


def test_a_context_listed_twice_is_refused(tmp_path: Path) -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: kc}\ncontexts: [a, {name: a}]")
    error = _error(tmp_path, text)
    assert error.field == "projects.0.backends.0.contexts"
    assert "repeated: a" in error.message


def test_a_namespace_must_be_a_dns_label(tmp_path: Path) -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: kc}\nnamespace: Team_A")
    assert _error(tmp_path, text).field == "projects.0.backends.0.namespace"


@pytest.mark.parametrize("kind", ["aws", "gcp", "runpod"])
def test_other_dstack_backend_types_are_not_supported_yet(tmp_path: Path, kind: str) -> None:
    error = _error(tmp_path, _backend_yaml(f"type: {kind}\nkubeconfig: {{filename: kc}}"))
    assert isinstance(error, NotSupportedError)
    assert error.field == "projects.0.backends.0.type"
    assert error.message.startswith(
        f"not supported by Berth yet: projects.0.backends.0.type: {kind}"
    )


def test_an_unknown_backend_field_lists_the_accepted_ones(tmp_path: Path) -> None:
    text = _backend_yaml("type: kubernetes\nkubeconfig: {filename: kc}\nnamespaces: [a]")
    error = _error(tmp_path, text)
    assert error.field == "projects.0.backends.0.namespaces"
    assert "did you mean namespace?" in error.message
    assert "accepted fields: allow_host_volumes, contexts, gpu_prices, kubeconfig" in error.message


def test_quotas_and_gpu_prices_are_optional_and_read_when_given() -> None:
    text = (
        "projects:\n  - name: main\n    quotas: {H100: 8, A100: 0}\n    backends:\n"
        "      - type: kubernetes\n        kubeconfig: {filename: kc}\n"
        "        gpu_prices: {H100: 2.49, L4: 0.3}\n"
    )
    config = server_config_from_text(text)
    assert config.projects[0].quotas == {"H100": 8, "A100": 0}
    assert config.backend_for("main").gpu_prices == {"H100": 2.49, "L4": 0.3}
    assert server_config_from_text(DOCUMENTED).projects[0].quotas is None


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ("quotas: {H100: -1}", "projects.0.quotas.H100"),
        ("quotas: {H100: 1.5}", "projects.0.quotas.H100"),
    ],
)
def test_a_quota_must_be_a_whole_non_negative_number(snippet: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        server_config_from_text(f"projects:\n  - name: main\n    {snippet}\n")
    assert caught.value.field == field


def test_project_names_must_be_unique() -> None:
    with pytest.raises(ConfigError) as caught:
        server_config_from_text("projects: [{name: main}, {name: main}]")
    assert caught.value.field == "projects"
    assert "repeated: ['main']" in caught.value.message


def test_a_project_without_a_backend_has_no_cluster() -> None:
    config = server_config_from_text("projects: [{name: main}]")
    with pytest.raises(ConfigError, match="project 'main' has no kubernetes backend"):
        config.backend_for("main")


def test_dstack_server_settings_berth_lacks_are_not_supported() -> None:
    with pytest.raises(NotSupportedError, match="not supported by Berth yet: encryption"):
        server_config_from_text("encryption: {keys: []}")


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the server configuration .*missing\.yml"):
        load_server_config(tmp_path / "missing.yml")


def test_a_yaml_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    error = _error(tmp_path, "projects:\n  - name: main\n   backends: [\n")
    assert error.message.startswith(f"invalid YAML in {tmp_path / 'config.yml'} at line 3, column")


def test_the_cluster_key_is_stable_and_differs_per_context() -> None:
    def key(context: str) -> str:
        text = _backend_yaml(
            f"type: kubernetes\nkubeconfig: {{filename: kc}}\ncontexts: [{context}]"
        )
        return server_config_from_text(text).backend_for("main").cluster_key()

    assert key("a") == key("a")
    assert key("a") != key("b")
    assert len(key("a")) == 12
