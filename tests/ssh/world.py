"""Berth with SSH for real: its processes, a jump port, loopback pods, users with keys.

Like ``tests/stack.py`` (whose :class:`Stack` it returns), but with the server
config the SSH tests need: ``proxy_jump`` at ``127.0.0.1`` and a free NodePort,
plus two projects whose NodePort the cluster must refuse; and with short
health and key intervals, so healing and key rotation are observed in seconds.
"""

from __future__ import annotations

import getpass
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import yaml

from cli.local.cluster import ClusterState
from cli.local.processes import ProcessRecord, is_running, log_tail
from shared import kube, ssh
from shared.ssh import JumpHostRecord
from shared.state.store import Store
from tests.polling import wait_until
from tests.rbac import berth_kubeconfig
from tests.ssh.loopback import LoopbackPods
from tests.stack import Stack, spawn

HEALTH_INTERVAL_S = 1.0  # the jump host's health check (and repair) period in these tests
KEYS_INTERVAL_S = 0.25
_WATCHDOG_S = 0.5  # how soon an exited Berth process is started again
SLOW = 60.0
"""Deadline for waits that assert no timing (a pod's sshd up, a run running): generous,
because a shared CI machine can be many times slower than a quiet one."""
NODE_PORTS = range(30000, 32768)  # the apiserver's default --service-node-port-range
RESERVED_PORTS = {32022}  # tests/stack.py's jump port, used by the e2e stack

AppFactory = Callable[[Any, Path], list[str]]


@dataclass
class SshWorld:
    stack: Stack
    store: Store
    pods: LoopbackPods
    kube: kube.Kube
    namespace: str
    jump_port: int
    squatted_port: int
    """A NodePort another Service holds: project ``taken`` asks for it."""
    apps: dict[str, AppFactory] = field(default_factory=dict)
    """Run name -> the main process its pods run (the service under test)."""
    restarts: list[str] = field(default_factory=list)
    """Berth processes the watchdog started again after they exited."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _watchdog: threading.Thread | None = None

    def app_for(self, pod: Any, directory: Path) -> list[str] | None:
        factory = self.apps.get((pod.metadata.labels or {}).get(kube.LABEL_RUN, ""))
        return factory(pod, directory) if factory else None

    def jump_sshd(self) -> ProcessRecord | None:
        """The sshd playing the main jump pod (its log shows each forwarded channel)."""
        return self.pods.process(f"berth-jump-{self.jump_port}-", "sshd")

    def jump(self, project: str = "main") -> JumpHostRecord:
        record = ssh.jump_host_of(self.store, project)
        assert record is not None, f"no jump host record for {project}: {self.stack.logs()}"
        return record

    def healthy_jump(self, *, after: float = 0.0, timeout: float = SLOW) -> JumpHostRecord:
        """The main jump host's record once a check after ``after`` (epoch s) passed."""

        def check() -> JumpHostRecord | None:
            record = ssh.jump_host_of(self.store, "main")
            ok = record is not None and record.healthy and (record.checked_at or 0) > after
            return record if ok else None

        try:
            return wait_until(check, timeout=timeout, what="a healthy jump host")
        except AssertionError as e:
            record = ssh.jump_host_of(self.store, "main")
            raise AssertionError(f"{e}\n{record}\n{self.diagnostics()}") from None

    def add_user(
        self, name: str, public_key: str | None, projects: tuple[str, ...] = ("main",)
    ) -> str:
        """Create a user in ``projects`` through the API (and set its key); its token."""
        with self.stack.client() as c:
            r = c.post("/api/users", json={"name": name, "projects": list(projects)})
            assert r.status_code == 201, r.text
            token = str(r.json()["token"])
        if public_key is not None:
            self.set_key(token, public_key)
        return token

    def submit(self, configuration: dict[str, Any], *, token: str | None = None) -> str:
        with self.stack.client(token) as c:
            r = c.post("/api/projects/main/runs", json={"configuration": configuration})
        assert r.status_code == 202, r.text
        return str(r.json()["name"])

    def running(self, name: str, *, timeout: float = 2 * SLOW) -> dict[str, Any]:
        """The run once it and every job run with a pod IP."""

        def check() -> dict[str, Any] | None:
            with self.stack.client() as c:
                run: dict[str, Any] = c.get(f"/api/projects/main/runs/{name}").json()
            jobs = run["jobs"]
            ok = run["status"] == "running" and all(j["pod_ip"] for j in jobs)
            return run if ok else None

        try:
            return wait_until(check, timeout=timeout, what=f"run {name} running")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnostics()}") from None

    def diagnostics(self) -> str:
        """What to read when a wait times out: logs, restarts, stand-in kubelet errors."""
        return "\n".join(
            [self.stack.logs(), f"restarted: {self.restarts}", f"loopback: {self.pods.errors[-3:]}"]
        )

    def stop(self, name: str) -> None:
        with self.stack.client() as c:
            r = c.post(f"/api/projects/main/runs/{name}/stop", json={"abort": True})
        assert r.status_code == 200, r.text

    def set_key(self, token: str, public_key: str) -> None:
        with self.stack.client(token) as c:
            r = c.put("/api/users/me/ssh-key", json={"public_key": public_key})
            assert r.status_code == 204, r.text


def new_key(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key pair on disk, as ssh-keygen writes it; (private path, public text)."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    path = directory / name
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    public = key.export_public_key().decode().strip()
    path.with_suffix(".pub").write_text(public + "\n")
    return path, public


async def login(record: JumpHostRecord, key_file: Path) -> None:
    """Log in to the jump host with ``key_file``, pinning its host key (SSHError if refused)."""
    conn = await ssh.connect(
        record.hostname,
        int(record.port or 0),
        username=record.user,
        client_key=asyncssh.read_private_key(key_file),
        host_key=record.host_key,
        timeout=5,
    )
    conn.close()
    await conn.wait_closed()


def start_world(
    cluster: ClusterState, k: kube.Kube, directory: Path, *, namespace: str
) -> SshWorld:
    directory.mkdir(parents=True, exist_ok=True)
    jump_port, squatted = _free_node_ports(k, 2)
    k.call(k.core.create_namespace, {"metadata": {"name": namespace}})
    k.call(k.core.create_namespaced_service, namespace, _squatter(squatted))
    # Berth runs with only the RBAC it ships (deploy/k8s), as in the e2e suite.
    kubeconfig = berth_kubeconfig(k, cluster, namespace=namespace, directory=directory)
    home = directory / "home"
    (home / "server").mkdir(parents=True)
    # main: the jump host the tests use; bad and taken: ports the cluster refuses;
    # auto: no port at all, so Kubernetes picks one (and the stand-in sshd listens there).
    projects = {"main": jump_port, "bad": 80, "taken": squatted, "auto": None}
    (home / "server" / "config.yml").write_text(
        yaml.safe_dump(_server_config(kubeconfig, namespace, projects))
    )
    port = free_loopback_port()
    token = secrets.token_urlsafe(16)
    user = getpass.getuser()  # sshd that is not root can only log its own user in
    env = {
        **os.environ,
        "BERTH_HOME": str(home),
        "BERTH_REDIS__URL": cluster.redis_url,
        "BERTH_REDIS__KEY_PREFIX": f"ssh{secrets.token_hex(3)}",
        "BERTH_API__PORT": str(port),
        "BERTH_API__ADMIN_TOKEN": token,
        "BERTH_ENVIRONMENT": "development",
        "BERTH_SSH__HEALTH_INTERVAL_S": str(HEALTH_INTERVAL_S),
        "BERTH_SSH__KEYS_INTERVAL_S": str(KEYS_INTERVAL_S),
        "BERTH_SSH__JUMP_USER": user,
        "BERTH_SSH__RUN_USER": user,
        # As deploy/k8s runs it: Berth's key from a file (created 0600 by the first
        # process), so every SSH test also proves the API and proxy worker share it.
        "BERTH_SSH__KEY_FILE": str(home / "berth_ed25519"),
    }
    stack = Stack(
        home=home, url=f"http://127.0.0.1:{port}", admin_token=token, namespace=namespace, env=env
    )
    (home / "config.yml").write_text(
        yaml.safe_dump({"url": stack.url, "token": token, "project": "main"})
    )
    _start(stack, directory / "logs")
    store = Store.connect(cluster.redis_url, prefix=env["BERTH_REDIS__KEY_PREFIX"], timeout_s=5)
    world = SshWorld(
        stack=stack,
        store=store,
        pods=LoopbackPods(k, namespace, directory / "pods"),
        kube=k,
        namespace=namespace,
        jump_port=jump_port,
        squatted_port=squatted,
    )
    world.pods.apps = world.app_for
    world.pods.start()
    world._watchdog = threading.Thread(target=_watchdog, args=(world,), name="berth-watchdog")
    world._watchdog.start()
    return world


def stop_world(world: SshWorld) -> None:
    world._stop.set()
    if world._watchdog is not None:
        world._watchdog.join()  # before stopping: it must not start anything after that
    world.pods.stop()
    world.stack.stop()
    world.store.close()
    world.kube.call(world.kube.core.delete_namespace, world.namespace)


def _watchdog(world: SshWorld) -> None:
    """Start a Berth process again when it exits, as its Deployment would.

    The proxy worker exits on purpose when it loses its Redis lease (so a
    standby can lead); on a heavily loaded machine that happens, and without a
    restart no jump host would be kept for the rest of the session.
    """
    while not world._stop.wait(_WATCHDOG_S):
        for record in list(world.stack.processes):
            if not is_running(record) and not world._stop.is_set():
                world.restarts.append(f"{record.name}: {log_tail(record, 5)}")
                world.stack.restart(record.name)


def _start(stack: Stack, logs: Path) -> None:
    commands = [
        ("api", ["server"]),
        ("proxy-worker", ["proxy-worker"]),
        ("beat", ["beat"]),
        ("worker", ["worker", "--name", f"ssh{secrets.token_hex(2)}@%h"]),
    ]
    spawn(stack, commands, logs)
    try:
        wait_until(lambda: _up(stack), timeout=60, what="Berth's processes")
    except AssertionError:
        stack.stop()
        raise AssertionError(f"Berth did not start:\n{stack.logs()}") from None


def _up(stack: Stack) -> bool:
    for record in stack.processes:
        if not is_running(record):
            raise AssertionError(f"{record.name} exited:\n{log_tail(record, 60)}")
    try:
        if httpx.get(f"{stack.url}/health", timeout=2).status_code != 200:
            return False
    except httpx.HTTPError:
        return False
    worker = next(p for p in stack.processes if p.name == "worker")
    return "ready." in Path(worker.log).read_text(errors="replace")


def _server_config(
    kubeconfig: Path, namespace: str, ports: dict[str, int | None]
) -> dict[str, Any]:
    return {
        "projects": [
            {
                "name": project,
                "backends": [
                    {
                        "type": "kubernetes",
                        "kubeconfig": {"filename": str(kubeconfig)},
                        "namespace": namespace,
                        "proxy_jump": {"hostname": "127.0.0.1"} | ({"port": port} if port else {}),
                    }
                ],
            }
            for project, port in ports.items()
        ]
    }


def _squatter(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "squatter"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "nothing"},
            "ports": [{"port": 80, "nodePort": port}],
        },
    }


def _free_node_ports(k: kube.Kube, count: int) -> list[int]:
    """NodePorts no Service holds and nothing on this machine listens on."""
    taken = set(RESERVED_PORTS)
    for svc in k.call(k.core.list_service_for_all_namespaces).items:
        taken.update(p.node_port for p in svc.spec.ports or [] if p.node_port)
    candidates = [p for p in NODE_PORTS if p not in taken]
    random.shuffle(candidates)
    found = [p for p in candidates[:200] if _bindable(p)][:count]
    assert len(found) == count, "no free NodePorts on this machine"
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
