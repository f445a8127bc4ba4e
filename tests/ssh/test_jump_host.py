"""The jump host: its objects, keys, refusals and healing, against real sshd and asyncssh."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
from pathlib import Path

import asyncssh
import httpx
import pytest

from shared import ssh
from shared.errors import KubeNotFound, SSHError
from tests.polling import wait_until
from tests.ssh.world import HEALTH_INTERVAL_S, SLOW, SshWorld, login, new_key
from workers.jumphost_objects import ANNOTATION_KEYS, LABEL_JUMP

pytestmark = pytest.mark.integration

# "Within seconds": typically under 1 s here (keys_interval 0.25 s plus a login);
# the margin is for a loaded CI machine, not for the design.
KEYS_WITHIN_S = 10


def _secret(world: SshWorld, name: str) -> dict[str, str]:
    k = world.kube
    data = k.call(k.core.read_namespaced_secret, name, world.namespace).data
    return {key: base64.b64decode(v).decode() for key, v in data.items()}


def _logs_in(world: SshWorld, key: Path) -> bool:
    try:
        asyncio.run(login(world.jump(), key))
    except SSHError:
        return False
    return True


def _refused(world: SshWorld, key: Path) -> str | None:
    try:
        asyncio.run(login(world.jump(), key))
    except SSHError as e:
        return str(e) if "refused the key" in str(e) else None
    return None


def test_the_jump_host_is_a_deployment_behind_the_nodeport_with_its_host_key_pinned(
    ssh_world: SshWorld,
) -> None:
    record = ssh_world.healthy_jump()
    name = f"berth-jump-{ssh_world.jump_port}"
    k = ssh_world.kube
    deployment = k.call(k.apps.read_namespaced_deployment, name, ssh_world.namespace)
    assert deployment.spec.replicas == 1
    pod_spec = deployment.spec.template.spec
    assert pod_spec.automount_service_account_token is False
    assert (
        "/usr/sbin/sshd -D -e -f /etc/berth-jump/sshd_config" in pod_spec.containers[0].command[-1]
    )
    service = k.call(k.core.read_namespaced_service, name, ssh_world.namespace)
    assert service.spec.type == "NodePort"
    assert service.spec.ports[0].node_port == ssh_world.jump_port == record.port
    files = _secret(ssh_world, name)
    for line in (
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowAgentForwarding no",
        "PermitTTY no",
        "AllowTcpForwarding local",
        "ForceCommand /bin/false",
    ):
        assert line in files["sshd_config"].splitlines()
    # What everyone pins is the public half of the key the pod's sshd serves.
    assert files[ssh.HOST_KEY_PUB_FILE].strip() == record.host_key
    assert ssh.public_key_text(files[ssh.HOST_KEY_FILE]) == record.host_key
    berth_key = ssh_world.store.get_blob(ssh.BERTH_PUBLIC_KEY_BLOB)
    assert berth_key is not None
    assert f"restrict,port-forwarding {berth_key['key']} " in files["authorized_keys"]
    # Berth's private key is the 0600 file BERTH_SSH__KEY_FILE names, and nowhere in Redis.
    key_file = ssh_world.stack.home / "berth_ed25519"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert ssh.public_key_text(key_file.read_text()) == berth_key["key"]
    assert ssh_world.store.r.get(ssh_world.store.key("ssh", "berth-key")) is None
    health = httpx.get(f"{ssh_world.stack.url}/health", timeout=10)
    # Anyone may see how many are up; which, where and who may use them is for members.
    assert health.json()["jump_hosts"]["ok"] >= 1
    for private in (record.id, record.namespace, str(record.port), record.host_key, "main"):
        assert private not in health.text


def test_status_shows_members_their_projects_jump_hosts_only(ssh_world: SshWorld) -> None:
    record = ssh_world.healthy_jump()
    shown = ssh_world.stack.cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    hosts = {h["id"]: h for h in json.loads(shown.stdout)["jump_hosts"]}
    assert hosts[record.id]["status"] == "ok"
    assert hosts[record.id]["host_key"] == record.host_key
    table = ssh_world.stack.cli("status", env={"COLUMNS": "250"})  # one line per host
    assert f"{record.hostname}:{record.port}" in table.stdout
    assert "ok" in table.stdout

    member = ssh_world.add_user(f"m{secrets.token_hex(2)}", None, projects=("main",))
    with ssh_world.stack.client(member) as c:
        seen = {h["id"]: h for h in c.get("/api/status").json()["jump_hosts"]}
    assert seen[record.id]["status"] == "ok"
    assert seen[record.id]["projects"] == ["main"]  # no other project's name
    assert seen[record.id]["authorized_users"] == []  # who else may log in is for admins

    outsider = ssh_world.add_user(f"o{secrets.token_hex(2)}", None, projects=("bad",))
    with ssh_world.stack.client(outsider) as c:
        others = c.get("/api/status").json()["jump_hosts"]
    assert record.id not in {h["id"] for h in others}
    assert all(set(h["projects"]) == {"bad"} for h in others)
    assert httpx.get(f"{ssh_world.stack.url}/api/status", timeout=10).status_code == 401


def test_a_nodeport_outside_the_range_or_already_taken_is_a_clear_error_not_a_crash(
    ssh_world: SshWorld,
) -> None:
    def errors() -> tuple[str, str] | None:
        bad, taken = (
            ssh.jump_host_of(ssh_world.store, "bad"),
            ssh.jump_host_of(ssh_world.store, "taken"),
        )
        if bad and taken and bad.status == taken.status == "error":
            return bad.reason, taken.reason
        return None

    bad, taken = wait_until(errors, timeout=SLOW, what="NodePort errors in the health records")
    assert "80" in bad and "NodePort range" in bad and "30000-32767" in bad
    assert str(ssh_world.squatted_port) in taken and "already allocated" in taken
    assert "pick a free proxy_jump.port" in taken
    # Refused before any pod was started for nothing, and the worker carries on.
    k = ssh_world.kube
    for port in (80, ssh_world.squatted_port):
        with pytest.raises(KubeNotFound):
            k.call(k.apps.read_namespaced_deployment, f"berth-jump-{port}", ssh_world.namespace)
    assert ssh_world.healthy_jump(after=time.time()).healthy


def test_a_new_key_works_within_seconds_and_the_old_one_is_then_refused(
    ssh_world: SshWorld, tmp_path: Path
) -> None:
    old_key, old_public = new_key(tmp_path, "old")
    rotated_key, rotated_public = new_key(tmp_path, "new")
    token = ssh_world.add_user("rotating", old_public)
    wait_until(
        lambda: _logs_in(ssh_world, old_key),
        timeout=KEYS_WITHIN_S,
        what="the user's first key to work",
    )
    sshd = ssh_world.jump_sshd()
    assert sshd is not None

    banner = asyncio.run(
        _rotate_with_a_session_open(ssh_world, token, old_key, rotated_key, rotated_public)
    )
    # The session opened with the old key still forwards, and sshd never restarted.
    assert banner.startswith(b"SSH-2.0-")
    assert ssh_world.jump_sshd() == sshd
    k = ssh_world.kube
    pods = k.call(
        k.core.list_namespaced_pod,
        ssh_world.namespace,
        label_selector=f"{LABEL_JUMP}=berth-jump-{ssh_world.jump_port}",
    ).items
    # The kubelet nudge: the running pod carries the hash of the keys it should see.
    assert pods and all(ANNOTATION_KEYS in (p.metadata.annotations or {}) for p in pods)


async def _rotate_with_a_session_open(
    world: SshWorld, token: str, old_key: Path, rotated_key: Path, rotated_public: str
) -> bytes:
    record = world.jump()
    conn = await ssh.connect(
        record.hostname,
        int(record.port or 0),
        username=record.user,
        client_key=asyncssh.read_private_key(old_key),
        host_key=record.host_key,
        timeout=5,
    )
    async with conn:
        await asyncio.to_thread(world.set_key, token, rotated_public)
        await asyncio.to_thread(
            wait_until,
            lambda: _logs_in(world, rotated_key) and _refused(world, old_key) is not None,
            timeout=KEYS_WITHIN_S,
            what="the new key in and the old one out",
        )
        reader, writer = await conn.open_connection("127.0.0.1", int(record.port or 0))
        banner = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
    return bytes(banner)


def test_a_key_nobody_registered_is_refused_by_asyncssh_and_openssh(
    ssh_world: SshWorld, tmp_path: Path
) -> None:
    record = ssh_world.healthy_jump()
    stranger, _ = new_key(tmp_path, "stranger")
    reason = _refused(ssh_world, stranger)
    assert reason is not None and f"127.0.0.1:{ssh_world.jump_port}" in reason
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_world.jump_port} {record.host_key}\n")
    result = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(stranger),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(ssh_world.jump_port),
            f"{record.user}@127.0.0.1",
            "-W",
            "127.0.0.1:9",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_a_deleted_jump_deployment_and_service_are_back_within_the_health_interval(
    ssh_world: SshWorld,
) -> None:
    ssh_world.healthy_jump()
    name = f"berth-jump-{ssh_world.jump_port}"
    k = ssh_world.kube
    old = k.call(k.apps.read_namespaced_deployment, name, ssh_world.namespace).metadata.uid
    deleted_at = time.time()
    k.call(k.apps.delete_namespaced_deployment, name, ssh_world.namespace)
    k.call(k.core.delete_namespaced_service, name, ssh_world.namespace)

    def recreated() -> bool:
        try:
            uid = k.call(k.apps.read_namespaced_deployment, name, ssh_world.namespace).metadata.uid
            service = k.call(k.core.read_namespaced_service, name, ssh_world.namespace)
        except KubeNotFound:
            return False
        return bool(uid != old and service.spec.ports[0].node_port == ssh_world.jump_port)

    # One interval to notice plus the reconcile's API calls: about 1-2 s here; the
    # margin is for a loaded CI machine.
    wait_until(recreated, timeout=HEALTH_INTERVAL_S + 9, what="the Deployment and Service back")
    record = ssh_world.healthy_jump(after=deleted_at)
    assert record.port == ssh_world.jump_port


def test_without_a_port_kubernetes_picks_the_nodeport_and_the_record_names_it(
    ssh_world: SshWorld,
) -> None:
    def healthy_auto() -> ssh.JumpHostRecord | None:
        record = ssh.jump_host_of(ssh_world.store, "auto")
        return record if record is not None and record.healthy else None

    record = wait_until(healthy_auto, timeout=SLOW, what="the jump host without a port healthy")
    k = ssh_world.kube
    service = k.call(k.core.read_namespaced_service, "berth-jump-auto", ssh_world.namespace)
    assert record.port == service.spec.ports[0].node_port
    assert record.port is not None and 30000 <= record.port <= 32767
