"""Dev environments, SSH through the jump host pod, services, volumes: all on real pods."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import kube
from shared.errors import KubeNotFound
from tests.polling import wait_until
from tests.realnode.world import SMALL, START_S, apply, running, stop, wait_status
from tests.ssh.world import new_key
from tests.stack import BERTH, Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


@dataclass
class Member:
    token: str
    key: Path
    home: Path
    """The CLI user's home: ~/.ssh/config is written here, not in the real one."""


@pytest.fixture(scope="module")
def member(real_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Member:
    tmp = tmp_path_factory.mktemp("member")
    key, public = new_key(tmp, "id_ed25519")
    with real_stack.client() as c:
        r = c.post("/api/users", json={"name": "realuser", "projects": ["main"]})
        assert r.status_code == 201, r.text
        token = str(r.json()["token"])
    with real_stack.client(token) as c:
        assert c.put("/api/users/me/ssh-key", json={"public_key": public}).status_code == 204
    home = tmp / "home"
    home.mkdir()
    return Member(token=token, key=key, home=home)


def _submit(stack: Stack, member: Member, conf: dict[str, Any]) -> str:
    with stack.client(member.token) as c:
        r = c.post("/api/projects/main/runs", json={"configuration": conf})
    assert r.status_code == 202, r.text
    return str(r.json()["name"])


def _attach(stack: Stack, member: Member, name: str) -> Path:
    result = subprocess.run(
        [BERTH, "attach", name, "-d", "-y", "--identity", str(member.key)],
        env={**stack.env, "HOME": str(member.home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return stack.home / "ssh" / f"{name}.config"


def _ssh(config: Path, host: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(config), host, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _ssh_output(config: Path, host: str, command: str) -> str | None:
    result = _ssh(config, host, command)
    return result.stdout if result.returncode == 0 else None


def _ssh_ok(config: Path, host: str) -> bool:
    return _ssh(config, host, "true").returncode == 0


@pytest.fixture(scope="module")
def ide(real_stack: Stack, member: Member) -> Iterator[str]:
    name = _submit(
        real_stack,
        member,
        {
            "type": "dev-environment",
            "name": "real-ide",
            "ide": "vscode",
            "resources": {"gpu": 1, "cpu": "1..", "memory": "0.1GB.."},
        },
    )
    running(real_stack, name)
    yield name
    stop(real_stack, name)


def test_attach_then_ssh_runs_a_command_in_the_dev_environment_through_the_jump_pod(
    real_stack: Stack, member: Member, ide: str
) -> None:
    config = _attach(real_stack, member, ide)
    text = config.read_text()
    assert "StrictHostKeyChecking yes" in text
    out = wait_until(
        partial(_ssh_output, config, ide, "nvidia-smi || echo $NVIDIA_VISIBLE_DEVICES; whoami"),
        timeout=START_S,
        what=f"ssh {ide}",
    )
    # No nvidia-smi in a fake-GPU node's image: the device the plugin gave is in the env.
    assert out.splitlines()[-2].startswith("GPU-berth-real-"), out
    assert out.splitlines()[-1] == "root"
    # The host keys are pinned: a tampered known-hosts entry for the pod is refused.
    known_hosts = config.with_suffix(".known_hosts")
    original = known_hosts.read_text()
    _, impostor = new_key(config.parent, "impostor")
    lines = original.splitlines()
    lines[-1] = f"{lines[-1].split()[0]} {' '.join(impostor.split()[:2])}"
    known_hosts.write_text("\n".join(lines) + "\n")
    try:
        refused = _ssh(config, ide, "true")
        assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
    finally:
        known_hosts.write_text(original)


def test_a_run_on_an_image_without_sshd_gets_ssh_from_the_init_image(
    real_stack: Stack, real_cluster: Any, member: Member
) -> None:
    image = real_cluster.real_nodes.images["nosshd"]
    name = _submit(
        real_stack,
        member,
        {
            "type": "dev-environment",
            "name": "no-sshd",
            "ide": "vscode",
            "image": image,
            "resources": {"gpu": 1, "cpu": "1..", "memory": "0.1GB.."},
        },
    )
    try:
        running(real_stack, name)
        config = _attach(real_stack, member, name)
        out = wait_until(
            partial(
                _ssh_output,
                config,
                name,
                "command -v sshd || echo no-sshd-in-image; ls /berth/tools",
            ),
            timeout=START_S,
            what=f"ssh {name}",
        )
        assert "no-sshd" in out and "sshd_config" in out, out
    finally:
        stop(real_stack, name)


def test_the_jump_pod_killed_is_recreated_and_ssh_works_again(
    real_stack: Stack, real_kube: kube.Kube, member: Member, ide: str
) -> None:
    config = _attach(real_stack, member, ide)
    wait_until(partial(_ssh_ok, config, ide), timeout=START_S, what="ssh before")
    namespace = real_stack.namespace
    k = real_kube
    (deployment,) = k.call(
        k.apps.list_namespaced_deployment, namespace, label_selector="berth.dev/jump-host"
    ).items
    name = deployment.metadata.name
    k.call(k.apps.delete_namespaced_deployment, name, namespace, propagation_policy="Foreground")

    def recreated() -> bool:
        try:
            d = k.call(k.apps.read_namespaced_deployment, name, namespace)
        except KubeNotFound:
            return False
        return bool(d.metadata.uid != deployment.metadata.uid)

    wait_until(recreated, timeout=60, what="the jump host Deployment recreated")
    wait_until(partial(_ssh_ok, config, ide), timeout=2 * START_S, what="ssh after recreation")


def test_a_service_of_two_replicas_answers_through_the_proxy_from_both(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: service
        name: web
        port: 8000
        replicas: 2
        auth: false
        commands:
          - mkdir -p /srv && echo "replica $DSTACK_REPLICA_NUM on $(hostname)" > /srv/index.html
          - python3 -m http.server 8000 -d /srv
        {SMALL}
        """,
    )
    try:
        live = running(real_stack, name)
        assert len(live["jobs"]) == 2
        seen: set[str] = set()

        def both() -> bool:
            try:
                r = httpx.get(f"{real_stack.url}/proxy/services/main/{name}/", timeout=10)
            except httpx.HTTPError:
                return False
            if r.status_code == 200:
                seen.add(r.text.split(" on ")[0])
            return bool(seen == {"replica 0", "replica 1"})

        wait_until(both, timeout=START_S, what=f"both replicas of {name} through the proxy")
    finally:
        stop(real_stack, name)


def test_a_file_written_to_a_volume_by_one_run_is_read_by_the_next(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path, team_volume: str
) -> None:
    writer = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: writer
        volumes: [{team_volume}:/data]
        commands: ["echo written-by-writer-$DSTACK_RUN_NAME > /data/note.txt"]
        {SMALL}
        """,
    )
    assert wait_status(real_stack, writer, "done", "failed")["status"] == "done"
    reader = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: reader
        volumes: [{team_volume}:/data]
        commands: ['test "$(cat /data/note.txt)" = written-by-writer-writer']
        {SMALL}
        """,
    )
    # The reader's exit code is the check: 0 only if it read what the writer wrote.
    assert wait_status(real_stack, reader, "done", "failed")["status"] == "done"
