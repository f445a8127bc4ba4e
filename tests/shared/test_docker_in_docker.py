"""dstack's ``docker: true``: how it parses beside the fields it excludes, what the
submission checks refuse, and the pod it makes (privileged, the dind image, dockerd
started before the commands, Docker's data root)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError, ForbiddenError
from shared.policy import pod_security
from shared.server_features import check_server_features
from shared.settings import Settings
from tests.shared.pods import job_pod
from workers import dind
from workers.podspec import ClaimMount

DIND = "registry.local/dind:1"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    return caught.value


def _pod(data: dict[str, Any], *, group: str | None = None, **ctx: Any) -> dict[str, Any]:
    return job_pod(data, name="dind", group=group, dind_image=DIND, **ctx)


def _main(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "type: task\ndocker: true\ncommands: [docker info]\n",
        "type: dev-environment\ndocker: true\nide: vscode\n",
        "type: service\ndocker: true\nport: 9000\ncommands: [docker compose up]\n",
    ],
    ids=["task", "dev-environment", "service"],
)
def test_docker_true_parses_on_every_run_type(text: str) -> None:
    assert parse_configuration(text).docker is True  # type: ignore[union-attr]


@pytest.mark.parametrize("other", ["image: debian", "python: '3.12'", "nvcc: true"])
def test_docker_and_an_image_choice_are_mutually_exclusive_naming_docker(other: str) -> None:
    error = _error(f"type: task\n{other}\ndocker: true\ncommands: [x]\n")
    assert error.field == "docker"
    assert f"{other.split(':')[0]} and docker are mutually exclusive" in error.message


def test_docker_overrides_privileged_false_at_the_run_level_as_dstack_does() -> None:
    conf = parse_configuration("type: task\ndocker: true\nprivileged: false\ncommands: [x]\n")
    assert _main(_pod(conf.model_dump(mode="json")))["securityContext"] == {"privileged": True}


SERVICE = "type: service\nport: 9000\n"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            SERVICE + "groups: [{replicas: 1, docker: true, privileged: false, commands: [x]}]",
            "groups.0.privileged",
            "privileged container",
        ),
        (
            SERVICE + "groups: [{replicas: 1, docker: true, image: x, commands: [x]}]",
            "groups.0.docker",
            "image and docker are mutually exclusive",
        ),
        (
            SERVICE + "image: x\ngroups: [{replicas: 1, docker: true, commands: [x]}]",
            "groups.0.docker",
            "the service sets image",
        ),
        (
            SERVICE + "docker: true\ngroups: [{replicas: 1, nvcc: true, commands: [x]}]",
            "groups.0.nvcc",
            "the service sets docker: true",
        ),
        (
            SERVICE + "docker: true\ngroups: [{replicas: 1, docker: true, commands: [x]}]",
            "groups.0.docker",
            "one place only",
        ),
    ],
)
def test_a_replica_groups_docker_follows_dstacks_rules_naming_the_field(
    text: str, field: str, words: str
) -> None:
    error = _error(text)
    assert (error.field, words in error.message) == (field, True), error.message


# -- submission checks ---------------------------------------------------------------


def test_a_server_without_a_dind_image_refuses_docker_naming_the_field_and_setting() -> None:
    conf = parse_configuration("type: task\ndocker: true\ncommands: [docker info]\n")
    with pytest.raises(ConfigError) as caught:
        check_server_features(conf, Settings(dind_image=None))
    assert caught.value.field == "docker"
    assert "dind_image" in caught.value.message
    check_server_features(conf, Settings(dind_image=DIND))


def test_a_replica_groups_docker_needs_the_dind_image_too() -> None:
    conf = parse_configuration(SERVICE + "groups: [{replicas: 1, docker: true, commands: [x]}]")
    with pytest.raises(ConfigError) as caught:
        check_server_features(conf, Settings(dind_image=None))
    assert caught.value.field == "groups.0.docker"


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_docker_is_refused_where_pod_security_forbids_privileged_pods(level: str) -> None:
    conf = parse_configuration("type: task\ndocker: true\ncommands: [docker info]\n")
    decision = pod_security.LevelDecision(level, "namespace label")  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError) as caught:
        pod_security.check(conf, decision)
    assert caught.value.field == "docker"
    assert "Docker-in-Docker runs a privileged container" in caught.value.message
    pod_security.check(conf, pod_security.LevelDecision("privileged", "server config"))


def test_a_replica_groups_privileged_container_is_seen_by_pod_security() -> None:
    conf = parse_configuration(SERVICE + "groups: [{replicas: 1, docker: true, commands: [x]}]")
    assert pod_security.privileged_field(conf) == "groups.0.docker"
    plain = parse_configuration(SERVICE + "groups: [{replicas: 1, commands: [x]}]")
    assert pod_security.privileged_field(plain) is None


# -- the pod -------------------------------------------------------------------------


def test_the_pod_runs_the_dind_image_privileged_and_starts_dockerd_before_the_commands() -> None:
    pod = _pod({"type": "task", "docker": True, "commands": ["docker run --rm hello"]})
    main = _main(pod)
    assert main["image"] == DIND
    assert main["securityContext"] == {"privileged": True}
    script = main["command"][2]
    assert script.index("dockerd --data-root /var/lib/docker") < script.index("docker run --rm")
    assert "berth_dockerd || exit 1" in script
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts[dind.DATA_ROOT]] == {"name": "berth-docker", "emptyDir": {}}


def test_a_volume_at_var_lib_docker_is_dockers_data_root_instead_of_an_empty_dir() -> None:
    pod = _pod(
        {
            "type": "dev-environment",
            "docker": True,
            "ide": "vscode",
            "volumes": [{"name": "docker-volume", "path": "/var/lib/docker"}],
        },
        claims={"docker-volume": ClaimMount(claim="docker-claim")},
    )
    main = _main(pod)
    assert [m["mountPath"] for m in main["volumeMounts"]].count(dind.DATA_ROOT) == 1
    by_path = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[by_path[dind.DATA_ROOT]]["persistentVolumeClaim"]["claimName"] == "docker-claim"
    assert "berth-docker" not in volumes
    # The dev environment's init runs once dockerd answers, as with dstack's start-dockerd.
    assert main["command"][2].index("berth_dockerd ||") < main["command"][2].index("sleep infinity")


def test_only_the_replica_group_that_asks_gets_docker() -> None:
    data = {
        "type": "service",
        "port": 9000,
        "groups": [
            {"name": "compose", "replicas": 1, "docker": True, "commands": ["docker compose up"]},
            {"name": "plain", "replicas": 1, "commands": ["python3 -m http.server 9000"]},
        ],
    }
    compose = _main(_pod(data, group="compose"))
    plain = _main(_pod(data, group="plain"))
    assert (compose["image"], compose["securityContext"]) == (DIND, {"privileged": True})
    assert plain["image"] == "berth.local/run:x" and "securityContext" not in plain
    assert "dockerd" not in plain["command"][2]


def test_a_run_without_docker_gets_no_daemon_and_no_privilege() -> None:
    main = _main(_pod({"type": "task", "commands": ["echo hi"]}))
    assert "dockerd" not in main["command"][2] and "securityContext" not in main


# -- the start lines, run by a real shell ----------------------------------------------


def test_a_dockerd_that_exits_fails_the_run_before_the_commands_with_its_log(
    tmp_path: Path,
) -> None:
    """Stand-ins for dockerd and docker on PATH: this daemon gives up at once, as one
    does without privileges; the commands must not run and the log's end is shown."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dockerd").write_text("#!/bin/sh\necho 'failed to start daemon: no privilege'\n")
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("dockerd", "docker"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "dockerd.log"
    script = "\n".join([*dind.start_lines(), "echo the commands ran"])
    # Nothing of this machine's: the log, data root and cgroup tree are the test's own.
    own = {dind.DOCKERD_LOG: log, dind.DATA_ROOT: tmp_path, "/sys/fs/cgroup": tmp_path}
    for path, replacement in own.items():
        script = script.replace(path, str(replacement))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "the commands ran" not in result.stdout
    assert "berth: docker: true, but dockerd exited" in result.stderr
    assert "failed to start daemon: no privilege" in result.stderr
