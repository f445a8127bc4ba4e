"""docker-compose.yml: the services, their health gates, mounts and secrets.

No Docker engine runs here, so the file is checked as data, by
``docker-compose config`` when it is installed (Debian's package; scripts/install.sh
installs it), and by running every service's ``berth`` command. The
healthcheck commands themselves run against real processes in ``test_flower.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from shared.settings import PLACEHOLDER_SECRET, Settings
from tests.stack import BERTH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
BERTH_SERVICES = {"api", "worker", "proxy-worker", "log-collector", "beat", "flower"}
# Where the containers find their configuration (see the Dockerfile's ENV).
KUBECONFIG_TARGET = "/home/berth/.kube/config"
SERVER_CONFIG_TARGET = "/etc/berth/config.yml"
SECRETS = ("BERTH_API__ADMIN_TOKEN", "BERTH_FLOWER__BASIC_AUTH")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def example_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def test_compose_runs_redis_and_every_berth_process() -> None:
    assert set(services()) == {"redis"} | BERTH_SERVICES


def test_redis_keeps_an_append_only_file_on_a_volume_and_never_evicts() -> None:
    redis = services()["redis"]
    args = redis["command"][1:]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags == {
        "--appendonly": "yes",
        "--appendfsync": "everysec",
        "--maxmemory-policy": "noeviction",
    }
    assert "redis-data:/data" in redis["volumes"]
    assert "ports" not in redis  # only the project's network reaches it


def test_every_berth_service_starts_only_once_redis_is_healthy() -> None:
    all_services = services()
    for name in BERTH_SERVICES:
        assert all_services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    for name, service in all_services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in all_services[dependency], f"{dependency} has no healthcheck"


def test_every_service_with_something_to_probe_has_a_healthcheck() -> None:
    all_services = services()
    for name in ("redis", "api", "worker", "flower"):
        check = all_services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["timeout"] and check["interval"] and check["retries"], name


def test_the_kubeconfig_and_server_config_are_mounted_read_only() -> None:
    for name in BERTH_SERVICES:
        service = services()[name]
        mounts = {_target(v): v for v in service["volumes"]}
        for target in (KUBECONFIG_TARGET, SERVER_CONFIG_TARGET):
            assert mounts[target].endswith(":ro"), f"{name}: {mounts[target]}"
        for volume in service["volumes"]:
            # Only named volumes (beat's schedule) are writable; the host's files never are.
            from_host = volume.startswith(("/", ".", "~", "$"))
            assert not from_host or volume.endswith(":ro"), f"{name}: {volume}"
        assert service["environment"]["BERTH_SERVER_CONFIG"] == SERVER_CONFIG_TARGET
        assert service["environment"]["BERTH_ENVIRONMENT"] == "production"
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name


def _target(volume: str) -> str:
    # host:container[:mode]; the host part may be ${VAR:-~/path}, which has no ":" after "-".
    parts = volume.replace(":-", "\0").split(":")
    return parts[1]


def test_secrets_come_only_from_the_git_ignored_env_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in BERTH_SERVICES:
        assert services()[name]["env_file"] == ".env"
    for secret in SECRETS:
        assert secret not in text, f"{secret} is set in docker-compose.yml"
        assert secret in example_env(), f"{secret} is not documented in .env.example"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".env"], cwd=ROOT, capture_output=True, check=False
    )
    assert tracked.returncode != 0, ".env is committed"


def test_the_example_env_file_documents_every_value_it_sets() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{line.split('=')[0]} has no comment above it"


def test_the_example_env_file_is_refused_in_production_until_its_placeholders_are_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in example_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BERTH_ENVIRONMENT", "production")  # as docker-compose.yml sets it
    with pytest.raises(pydantic.ValidationError, match="placeholder"):
        Settings()
    monkeypatch.setenv("BERTH_API__ADMIN_TOKEN", "a-real-token")
    monkeypatch.setenv("BERTH_FLOWER__BASIC_AUTH", "admin:a-real-password")
    settings = Settings()
    assert settings.api.admin_token is not None
    assert settings.api.admin_token.get_secret_value() == "a-real-token"
    assert settings.flower.basic_auth is not None
    assert PLACEHOLDER_SECRET not in settings.flower.basic_auth.get_secret_value()


def test_every_service_command_is_a_real_berth_subcommand() -> None:
    for name in BERTH_SERVICES:
        command = services()[name]["command"]
        result = subprocess.run(
            [BERTH, *command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{name}: berth {' '.join(command)}\n{result.stderr}"


def test_published_ports_listen_on_loopback_only() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/install.sh installs it)")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, project / ".env")  # compose refuses a missing env_file
    result = subprocess.run(
        [binary, "config"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == {"redis"} | BERTH_SERVICES
    # The env file reached the containers, and the mounts kept their read-only mode.
    assert resolved["api"]["environment"]["BERTH_API__ADMIN_TOKEN"] == PLACEHOLDER_SECRET
    assert any(v.endswith(f"{KUBECONFIG_TARGET}:ro") for v in resolved["worker"]["volumes"])
