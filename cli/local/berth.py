"""Berth itself on the local cluster: what ``berth local up`` starts after the cluster.

The API, a Celery worker, beat, the proxy worker and Flower run as ``berth
...`` processes in the background, each with its log file under the cluster
directory's ``logs/``, recorded by PID in the cluster state like the control
plane, so ``berth local down`` stops them the same way.

It also writes what a newcomer would otherwise have to guess: a server config
for the local cluster (a ``main`` project whose runs land on the real nodes,
with the SSH jump host on node 0's NodePort), an admin token, and the CLI's own
config, so ``berth ps`` works with no flags. A server config the user wrote
(one without the marker line) is never overwritten.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel

from cli.client import ClientConfig, save_client_config
from cli.local import team
from cli.local.processes import ProcessRecord, is_running, log_tail, start_process
from cli.local.realnode import RealNodes
from cli.local.realnode.configs import CONTAINER_LOG_MAX_BYTES, REAL_NODE_LABEL
from shared import kube
from shared.errors import KubeConflict, LocalClusterError

NAMESPACE = "berth-local"
JUMP_NODE_PORT = 30022  # inside the default NodePort range; fixed so SSH configs stay valid
TEAM_JUMP_PORT = 30024  # project team's jump host, in its own namespace
API_PORT = 3000  # dstack's port too: the URL a dstack user expects
FLOWER_PORT = 5555
MARKER = "# Written by `berth local up`"
DATA_CLAIM = "berth-local-data"
# Order matters: the worker and beat need nothing else, the API answers last.
PROCESSES = (
    ("berth-worker", ["worker", "--name", "local@%h", "--concurrency", "4"]),
    ("berth-beat", ["beat"]),
    ("berth-proxy-worker", ["proxy-worker"]),
    ("berth-log-collector", ["log-collector"]),
    ("berth-api", ["server"]),
)
# More API processes share the API's port (``api.reuse_port``), as replicas behind one
# address; each costs ~130 MB and a few seconds of start-up CPU, so one by default.
MAX_API_PROCESSES = 4
EXTRA_APIS = tuple(f"berth-api-{i}" for i in range(2, MAX_API_PROCESSES + 1))
NAMES = (*(name for name, _ in PROCESSES), *EXTRA_APIS, "berth-flower")
_READY_S = 60.0  # the API imports and connects in ~3 s on 2 cores


class LocalBerth(BaseModel):
    """How to reach the local Berth, recorded in the cluster state (mode 600)."""

    api_url: str
    admin_token: str
    flower_url: str
    flower_auth: str
    server_config: str
    wrote_server_config: bool


def start(
    *,
    home: Path,
    cluster_dir: Path,
    kubeconfig: Path,
    redis_url: str,
    real_nodes: RealNodes | None,
    processes: dict[str, ProcessRecord],
    save: Callable[[], None],
    progress: Callable[[str], None],
    api_processes: int = 1,
) -> LocalBerth:
    """Write the configs and start Berth's processes; the caller stops them on failure.

    ``api_processes`` > 1 starts that many API processes on the one API port
    (``berth-api``, ``berth-api-2``, ...), the kernel spreading connections over them.
    """
    if not 1 <= api_processes <= MAX_API_PROCESSES:
        raise LocalClusterError(f"API processes: 1 to {MAX_API_PROCESSES}, not {api_processes}")
    _prepare_cluster(kubeconfig, cluster_dir, real_nodes)
    server_config = home / "server" / "config.yml"
    wrote = _write_server_config(server_config, kubeconfig, real_nodes)
    if not wrote:
        progress(f"keeping your server config {server_config} (it has no `{MARKER}` line)")
    api_port = _port(API_PORT, "the API")
    flower_port = _port(FLOWER_PORT, "Flower")
    token, flower_auth, secrets_key = _secrets(cluster_dir / "berth-secrets.json")
    env = {
        "BERTH_HOME": str(home),
        "BERTH_ENVIRONMENT": "development",
        "BERTH_REDIS__URL": redis_url,
        "BERTH_API__PORT": str(api_port),
        "BERTH_API__ADMIN_TOKEN": token,
        "BERTH_FLOWER__BASIC_AUTH": flower_auth,
        "BERTH_SECRETS__KEY": secrets_key,
    }
    if real_nodes is not None:
        env |= {
            "BERTH_DEFAULT_IMAGE": real_nodes.images["run"],
            "BERTH_SSH__JUMP_IMAGE": real_nodes.images["jump"],
            "BERTH_DIND_IMAGE": real_nodes.images["dind"],  # docker: true (workers/dind.py)
            "BERTH_LOGS__NODE_LOG_MAX_BYTES": str(CONTAINER_LOG_MAX_BYTES),
        }
    berth = str(Path(sys.executable).with_name("berth"))
    if not Path(berth).exists():
        berth = shutil.which("berth") or "berth"
    logs = cluster_dir / "logs"
    if api_processes > 1:
        env["BERTH_API__REUSE_PORT"] = "true"
    extra = [(name, ["server"]) for name in EXTRA_APIS[: api_processes - 1]]
    commands = [*PROCESSES, *extra, ("berth-flower", ["flower", "--port", str(flower_port)])]
    for name, argv in commands:
        progress(f"starting {name}")
        processes[name] = start_process(name, [berth, *argv], log_dir=logs, env=env)
        save()
    api_url = f"http://127.0.0.1:{api_port}"
    _wait_api(api_url, [processes[name] for name, _ in commands])
    save_client_config(home, ClientConfig(url=api_url, token=token, project="main"))
    return LocalBerth(
        api_url=api_url,
        admin_token=token,
        flower_url=f"http://127.0.0.1:{flower_port}",
        flower_auth=flower_auth,
        server_config=str(server_config),
        wrote_server_config=wrote,
    )


def server_config(kubeconfig: Path, real_nodes: RealNodes | None) -> dict[str, Any]:
    backend: dict[str, Any] = {
        "type": "kubernetes",
        "kubeconfig": {"filename": str(kubeconfig)},
        "namespace": NAMESPACE,
    }
    # Project "team": a namespace with only a Role and a GPU quota (cli/local/team.py),
    # so Berth runs it in namespace-only mode.
    team_backend: dict[str, Any] = backend | {
        "kubeconfig": {"filename": str(kubeconfig.parent / f"{team.TEAM_NAMESPACE}.kubeconfig")},
        "namespace": team.TEAM_NAMESPACE,
    }
    if real_nodes is not None:
        real = {
            # Runs land where they really run; the KWOK pools only pretend to.
            "pod": {"node_selector": {REAL_NODE_LABEL: "true"}},
            "proxy_jump": {"hostname": real_nodes.ips[0], "port": JUMP_NODE_PORT},
            "ssh_init_image": real_nodes.images["sshd-init"],
        }
        backend |= real
        team_jump = {"hostname": real_nodes.ips[0], "port": TEAM_JUMP_PORT}
        team_backend |= real | {"proxy_jump": team_jump}
    main: dict[str, Any] = {"name": "main", "backends": [backend]}
    if real_nodes is not None:
        # docker: true needs a privileged pod, root on the node; a real node is this
        # machine, on which `berth local up` already runs as root. Not for "team".
        main["allow_privileged"] = True
    return {
        "projects": [
            main,
            {"name": team.TEAM_PROJECT, "backends": [team_backend]},
        ]
    }


def _write_server_config(path: Path, kubeconfig: Path, real_nodes: RealNodes | None) -> bool:
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(server_config(kubeconfig, real_nodes), sort_keys=False)
    note = "for the local cluster; rewritten on every up while this line is here."
    path.write_text(f"{MARKER} {note}\n{body}")
    return True


def _prepare_cluster(kubeconfig: Path, cluster_dir: Path, real_nodes: RealNodes | None) -> None:
    """The runs' namespace and, with real nodes, a claim on a directory of this machine
    (the local cluster has no storage provisioner) for ``examples/volume.dstack.yml``."""
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        with contextlib.suppress(KubeConflict):
            k.call(k.core.create_namespace, {"metadata": {"name": NAMESPACE}})
        team.ensure_team(k, admin_kubeconfig=kubeconfig, directory=kubeconfig.parent)
        if real_nodes is None:
            return
        data = cluster_dir / "volumes" / "data"
        data.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KubeConflict):
            k.call(k.core.create_persistent_volume, _data_volume(data))
        with contextlib.suppress(KubeConflict):
            k.call(k.core.create_namespaced_persistent_volume_claim, NAMESPACE, _data_claim())
    finally:
        k.close()


def _data_volume(path: Path) -> dict[str, Any]:
    return {
        "metadata": {"name": DATA_CLAIM},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": NAMESPACE, "name": DATA_CLAIM},
        },
    }


def _data_claim() -> dict[str, Any]:
    return {
        "metadata": {"name": DATA_CLAIM},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": DATA_CLAIM,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }


def _secrets(path: Path) -> tuple[str, str, str]:
    """The admin token, Flower's login and the key of project secrets, made once:
    Redis (AOF) keeps the admin user and the encrypted secrets across restarts, so
    new ones on every up would lock the CLI out and make the secrets unreadable."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    fresh = {
        "admin_token": secrets.token_urlsafe(24),
        "flower_auth": f"admin:{secrets.token_hex(8)}",
        # A Fernet key: 32 random bytes, url-safe base64.
        "secrets_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    merged = {k: str(saved.get(k) or v) for k, v in fresh.items()}
    if merged != saved:
        path.write_text(json.dumps(merged))
        path.chmod(0o600)
    return merged["admin_token"], merged["flower_auth"], merged["secrets_key"]


def _port(preferred: int, what: str) -> int:
    """``preferred`` if it is free on loopback, else any free port (said in the summary)."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise LocalClusterError(f"no free port for {what} on 127.0.0.1")


def _wait_api(url: str, records: list[ProcessRecord]) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        for record in records:
            if not is_running(record):
                raise LocalClusterError(
                    f"{record.name} exited during start-up; its log ({record.log}) ends:\n"
                    f"{log_tail(record)}"
                )
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise LocalClusterError(f"the Berth API did not answer at {url} within {_READY_S:.0f}s")
