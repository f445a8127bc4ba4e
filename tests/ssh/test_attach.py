"""``berth attach``: the real OpenSSH client, through the jump host, into run pods."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest

from cli.local.processes import start_process, stop_process
from tests.interactive import foreground_signals
from tests.polling import wait_until
from tests.ssh.world import SLOW, SshWorld, free_loopback_port, new_key
from tests.stack import BERTH

pytestmark = pytest.mark.integration


@dataclass
class DevEnvironment:
    name: str
    pod_ip: str
    key: Path
    token: str
    home: Path
    """The CLI user's home: ``~/.ssh/config`` lives here, not in the real one."""
    local_port: int
    """The run's ``ports: ["local:inside"]``, with an app on the pod's localhost:inside."""


@pytest.fixture(scope="module")
def ide(ssh_world: SshWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevEnvironment]:
    """A running dev environment of a member with a key, and that member's CLI home."""
    tmp = tmp_path_factory.mktemp("attach")
    key, public = new_key(tmp, "id_ed25519")
    token = ssh_world.add_user("attacher", public)
    # The app listens on the pod's localhost; a loopback pod's localhost is this host's.
    inside, local = free_loopback_port(), free_loopback_port()
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("hello from the pod\n")
    app = start_process(
        "pod-app",
        [
            sys.executable,
            "-m",
            "http.server",
            str(inside),
            "-b",
            "127.0.0.1",
            "-d",
            str(tmp / "www"),
        ],
        log_dir=tmp,
    )
    conf = {
        "type": "dev-environment",
        "name": "ide",
        "ide": "vscode",
        "ports": [f"{local}:{inside}"],
    }
    name = ssh_world.submit(conf, token=token)
    pod_ip = ssh_world.running(name)["jobs"][0]["pod_ip"]
    home = tmp / "home"
    home.mkdir()
    try:
        yield DevEnvironment(
            name=name, pod_ip=pod_ip, key=key, token=token, home=home, local_port=local
        )
    finally:
        ssh_world.stop(name)
        stop_process(app)


def _attach(world: SshWorld, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BERTH, "attach", "-d", *args],
        env={**world.stack.env, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ssh(config: Path, host: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(config), host, *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _ssh_ok(config: Path, host: str) -> bool:
    return _ssh(config, host, "true").returncode == 0


def test_ssh_with_the_generated_config_runs_a_command_in_the_run_through_the_jump_host(
    ssh_world: SshWorld, ide: DevEnvironment
) -> None:
    attached = _attach(ssh_world, ide.home, ide.name, "-y", "--identity", str(ide.key))
    assert attached.returncode == 0, attached.stderr + attached.stdout

    config = ssh_world.stack.home / "ssh" / f"{ide.name}.config"
    text = config.read_text()
    assert "StrictHostKeyChecking yes" in text and "StrictHostKeyChecking no" not in text
    assert f"ProxyJump berth-jump-{ide.name}" in text
    include = f"Include {ssh_world.stack.home / 'ssh' / '*.config'}"
    assert (ide.home / ".ssh" / "config").read_text().splitlines()[0] == include
    # The pod's stand-in sshd starts moments after the pod is Running.
    wait_until(partial(_ssh_ok, config, ide.name), timeout=SLOW, what=f"ssh {ide.name} true")
    # Plain `ssh ide` through ~/.ssh/config's Include works too (-F: this test's home).
    via_include = _ssh(ide.home / ".ssh" / "config", ide.name, "true")
    assert via_include.returncode == 0, via_include.stderr
    jump = ssh_world.jump_sshd()
    assert jump is not None
    assert f"target {ide.pod_ip} port 10022" in Path(jump.log).read_text()

    attached_again = _attach(ssh_world, ide.home, ide.name, "-y", "--identity", str(ide.key))
    assert attached_again.returncode == 0
    assert (ide.home / ".ssh" / "config").read_text().count(include) == 1


def test_a_run_pod_with_another_host_key_than_the_pinned_one_is_refused(
    ssh_world: SshWorld, ide: DevEnvironment, tmp_path: Path
) -> None:
    assert _attach(ssh_world, ide.home, ide.name, "-y", "-i", str(ide.key)).returncode == 0
    config = ssh_world.stack.home / "ssh" / f"{ide.name}.config"
    wait_until(partial(_ssh_ok, config, ide.name), timeout=SLOW, what="ssh working")

    known_hosts = config.with_suffix(".known_hosts")
    _, impostor = new_key(tmp_path, "impostor")
    lines = known_hosts.read_text().splitlines()
    lines[-1] = f"{lines[-1].split()[0]} {' '.join(impostor.split()[:2])}"  # the pod's entry
    known_hosts.write_text("\n".join(lines) + "\n")
    refused = _ssh(config, ide.name, "true")
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


def test_attach_forward_serves_the_runs_port_on_localhost_until_interrupted(
    ssh_world: SshWorld, ide: DevEnvironment
) -> None:
    forwarding = subprocess.Popen(
        [BERTH, "attach", ide.name, "-y", "-i", str(ide.key), "--forward"],
        env={**ssh_world.stack.env, "HOME": str(ide.home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=foreground_signals,
    )
    url = f"http://127.0.0.1:{ide.local_port}/"
    try:
        body = wait_until(lambda: _get(url), timeout=SLOW, what="the forwarded port")
        assert body == "hello from the pod\n"
        os.kill(forwarding.pid, signal.SIGINT)
        assert forwarding.wait(10) == 0
        assert _get(url) is None  # the ssh child went with it
    finally:
        if forwarding.poll() is None:
            forwarding.kill()
            forwarding.wait(10)


def test_each_node_of_a_two_node_task_gets_its_own_host_entry(
    ssh_world: SshWorld, ide: DevEnvironment
) -> None:
    name = ssh_world.submit(
        {"type": "task", "name": "pair", "nodes": 2, "commands": ["torchrun train.py"]},
        token=ide.token,
    )
    try:
        jobs = ssh_world.running(name)["jobs"]
        assert _attach(ssh_world, ide.home, name, "-y", "-i", str(ide.key)).returncode == 0
        config = ssh_world.stack.home / "ssh" / f"{name}.config"
        text = config.read_text()
        assert f"Host {name} {name}-0\n" in text and f"Host {name}-1\n" in text
        hostnames = {line.split()[1] for line in text.splitlines() if "HostName 127.240." in line}
        assert hostnames == {j["pod_ip"] for j in jobs}
        for host in (f"{name}-0", f"{name}-1"):
            wait_until(partial(_ssh_ok, config, host), timeout=SLOW, what=f"ssh {host} true")
    finally:
        ssh_world.stop(name)


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None
