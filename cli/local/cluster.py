"""``berth local up|down|status``: the embedded control plane's life cycle.

State lives in one directory (``~/.berth/local`` by default, a temporary one
in tests): certificates, etcd data, Redis AOF, logs, the kubeconfig and
``state.json``, which records every PID we started so ``down`` stops exactly
those and a second ``up`` can tell that the cluster already runs.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel

from cli.local import berth as local_berth
from cli.local import inotify, pod_logs, realnode
from cli.local import nodes as node_pools
from cli.local.pki import Pki, ensure_pki
from cli.local.processes import (
    ProcessRecord,
    free_port,
    is_running,
    log_tail,
    start_process,
    stop_process,
)
from shared import kube
from shared.errors import KubeConflict, KubeError, LocalClusterError

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local-cluster" / "build.sh"
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
# Room for a Service per run of a 1,000-run burst (dstack creates one per job; a /24
# ran out at 254 in bench/dstack.py). The first address, 10.0.0.1, is in the apiserver's
# certificate (cli/local/pki.py).
SERVICE_CIDR = "10.0.0.0/16"
# Pod IPs inside 127.0.0.0/8: KWOK runs no containers, so the SSH tests start real
# sshd and HTTP servers on these loopback addresses to play the pods (tests/ssh).
# Linux routes all of 127.0.0.0/8 to lo, so every pod IP is bindable without setup.
POD_CIDR = "127.240.0.0/16"
# Every fake node's InternalIP: the apiserver dials it (and the node's kubelet
# port, KWOK's server) to fetch pod logs, so it must be where KWOK listens.
KWOK_NODE_IP = "127.0.0.1"
# Order matters: each process needs the ones before it.
PROCESS_ORDER = (
    "redis",
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kwok",
)

Progress = Callable[[str], None]


class ClusterState(BaseModel):
    directory: str
    bin_dir: str
    kubeconfig: str
    admin_token: str
    nobody_token: str
    """A valid user with no RBAC bindings at all: for "403 without rights" tests."""
    redis_url: str
    ports: dict[str, int]
    processes: dict[str, ProcessRecord]
    started_at: float
    real_nodes: realnode.RealNodes | None = None
    """The kubelet + containerd nodes beside the KWOK pools; None when started without."""
    berth: local_berth.LocalBerth | None = None
    """Berth's own processes on this cluster; None when only the cluster was started."""

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca_file(self) -> str:
        return str(Path(self.directory) / "pki" / "ca.crt")


def up(
    directory: Path,
    *,
    pools_file: Path = node_pools.DEFAULT_POOLS_FILE,
    real_nodes: int = 0,
    berth_home: Path | None = None,
    api_processes: int = 1,
    timeout_s: float = 120.0,
    progress: Progress = lambda _msg: None,
) -> tuple[ClusterState, bool]:
    """Start everything that is not running; return the state and whether it was already up.

    ``real_nodes`` kubelet + containerd nodes run beside the KWOK pools (see
    :mod:`cli.local.realnode`); their images are built on the first start.
    With ``berth_home``, Berth itself runs on the cluster too (:mod:`cli.local.berth`),
    configured in that home, with ``api_processes`` API processes on its one port.
    """
    current = read_state(directory)
    if current is not None and all(is_running(p) for p in current.processes.values()):
        return current, True
    if current is not None:
        progress("some local cluster processes were down; restarting them all")
        down(directory)
    pools = node_pools.load_pools(pools_file)  # fail on a bad file before starting anything
    bin_dir = build(progress=progress)
    inotify.raise_limit()  # KWOK's log watchers (cli/local/inotify.py says why)
    state = _start(directory, bin_dir, timeout_s=timeout_s, progress=progress)
    try:
        _create_nodes(
            state, pools, tainted=bool(real_nodes), timeout_s=timeout_s, progress=progress
        )
        if real_nodes:
            _start_real_nodes(state, real_nodes, timeout_s=timeout_s, progress=progress)
        if berth_home is not None:
            state.berth = local_berth.start(
                home=berth_home,
                cluster_dir=directory,
                kubeconfig=Path(state.kubeconfig),
                redis_url=state.redis_url,
                real_nodes=state.real_nodes,
                processes=state.processes,
                save=lambda: _write_state(directory, state),
                api_processes=api_processes,
                progress=progress,
            )
            _write_state(directory, state)
    except BaseException:
        down(directory)
        raise
    return state, False


def _start_real_nodes(
    state: ClusterState, count: int, *, timeout_s: float, progress: Progress
) -> None:
    directory = Path(state.directory)

    def created(nodes: realnode.RealNodes) -> None:
        state.real_nodes = nodes
        _write_state(directory, state)

    realnode.start(
        count=count,
        directory=directory,
        bin_dir=Path(state.bin_dir),
        kubeconfig=Path(state.kubeconfig),
        pki=ensure_pki(directory / "pki"),
        service_cidr=SERVICE_CIDR,
        processes=state.processes,
        save=lambda: _write_state(directory, state),
        created=created,
        timeout_s=timeout_s,
        progress=progress,
    )


def down(directory: Path, *, remove_images: bool = False) -> list[str]:
    """Stop, by PID and in reverse start order, only the processes ``up`` recorded;
    ``remove_images`` also frees the disk the real nodes' unpacked images take."""
    state = read_state(directory)
    if state is None:
        if remove_images:
            realnode.remove_images(directory)
        return []
    stopped = []
    for name in reversed(local_berth.NAMES):
        record = state.processes.get(name)
        if record is not None and is_running(record):
            stop_process(record)
            stopped.append(name)
    if state.real_nodes is not None:
        apiserver = state.processes.get("kube-apiserver")
        realnode.stop(
            state.real_nodes,
            kubeconfig=Path(state.kubeconfig),
            processes=state.processes,
            apiserver_up=apiserver is not None and is_running(apiserver),
        )
        stopped += [
            n for n in state.processes if n not in PROCESS_ORDER and not n.startswith("berth-")
        ]
    for name in reversed(PROCESS_ORDER):
        record = state.processes.get(name)
        if record is not None and is_running(record):
            stop_process(record)
            stopped.append(name)
    (directory / "state.json").unlink(missing_ok=True)
    inotify.restore_limit(others_running=inotify.kwok_running())
    if remove_images:
        realnode.remove_images(directory)
    return stopped


def status(directory: Path) -> dict[str, bool] | None:
    """Which recorded processes run now; None when ``up`` was never run here."""
    state = read_state(directory)
    if state is None:
        return None
    return {name: is_running(rec) for name, rec in state.processes.items()}


def read_state(directory: Path) -> ClusterState | None:
    try:
        return ClusterState.model_validate_json((directory / "state.json").read_text())
    except FileNotFoundError:
        return None


def build(*, progress: Progress = lambda _msg: None) -> Path:
    """Run the Go build (a no-op when the cache is warm) and return the binary directory."""
    progress("building the control plane from Go modules (cached after the first time)")
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,  # the script prints its own progress there
            text=True,
            timeout=3600,  # a cold build on 2 cores takes well under this
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LocalClusterError("the control plane build did not finish within an hour") from e
    if proc.returncode != 0:
        raise LocalClusterError(f"the control plane build failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def _start(directory: Path, bin_dir: Path, *, timeout_s: float, progress: Progress) -> ClusterState:
    directory.mkdir(parents=True, exist_ok=True)
    pki = ensure_pki(directory / "pki")
    tokens = _ensure_tokens(directory)
    ports = {
        name: free_port()
        for name in (
            "redis",
            "etcd",
            "etcd-peer",
            "apiserver",
            "scheduler",
            "controller-manager",
            "kwok",
        )
    }
    logs = directory / "logs"
    pod_logs.write_kwok_config(directory)
    kubeconfig = _write_kubeconfig(directory, ports["apiserver"], pki, tokens["admin"])
    state = ClusterState(
        directory=str(directory),
        bin_dir=str(bin_dir),
        kubeconfig=str(kubeconfig),
        admin_token=tokens["admin"],
        nobody_token=tokens["nobody"],
        redis_url=f"redis://127.0.0.1:{ports['redis']}/0",
        ports=ports,
        processes={},
        started_at=time.time(),
    )
    deadline = time.monotonic() + timeout_s
    try:
        for name in PROCESS_ORDER:
            argv = _argv(name, state, pki, directory)
            progress(f"starting {name}")
            state.processes[name] = start_process(name, argv, log_dir=logs)
            _write_state(directory, state)
            if name == "kube-apiserver":
                _wait_ready(state, name, _apiserver_ready, deadline)
                pod_logs.install_crd(Path(state.kubeconfig), deadline=deadline)
            elif name in ("redis", "etcd"):
                _wait_ready(state, name, _port_open(state.ports[name]), deadline)
        for name, port in (
            ("kube-scheduler", "scheduler"),
            ("kube-controller-manager", "controller-manager"),
        ):
            _wait_ready(state, name, _healthz(state.ports[port]), deadline)
    except Exception:
        down(directory)
        raise
    return state


def _argv(name: str, s: ClusterState, pki: Pki, directory: Path) -> list[str]:
    b = Path(s.bin_dir)
    p = s.ports
    kc = s.kubeconfig
    if name == "redis":
        return redis_argv(p["redis"], directory / "redis")
    if name == "etcd":
        peer = f"http://127.0.0.1:{p['etcd-peer']}"
        client_url = f"http://127.0.0.1:{p['etcd']}"
        return [
            str(b / "etcd"),
            "--name=berth",
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=berth={peer}",
            "--unsafe-no-fsync",  # local and disposable
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            str(b / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={p['apiserver']}",
            f"--cert-dir={directory / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={directory / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",  # one client at a time; APF only adds latency
            # Pod logs: dial a node's kubelet (KWOK) at its InternalIP, never its
            # Hostname (the node name, which resolves nowhere), and verify its cert.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            # Real kubelets authenticate the apiserver by this certificate (x509).
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            "--v=0",
        ]
    if name in ("kube-scheduler", "kube-controller-manager"):
        port = p["scheduler" if name == "kube-scheduler" else "controller-manager"]
        argv = [
            str(b / name),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--v=0",
            # The default client limits (50 QPS scheduler, 20 controller-manager)
            # throttle a 500-pod burst for ~10 s; a local cluster has no one to protect.
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
        ]
        if name == "kube-controller-manager":
            argv += [
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
            ]
        return argv
    if name == "kwok":
        return [
            str(b / "kwok"),
            f"--kubeconfig={kc}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={node_pools.KWOK_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            f"--config={STAGES_FILE}",
            "--node-lease-duration-seconds=40",  # kwok renews node leases like a kubelet
            # KWOK's server is every node's kubelet endpoint (pod logs; see pod_logs.py).
            # The node stage reports --node-ip and --node-port in each node's status.
            f"--server-address={KWOK_NODE_IP}:{p['kwok']}",
            f"--node-ip={KWOK_NODE_IP}",
            f"--node-port={p['kwok']}",
            f"--tls-cert-file={pki.kubelet_cert}",
            f"--tls-private-key-file={pki.kubelet_key}",
            "--enable-crds=Logs",
            f"--config={directory / pod_logs.KWOK_CONFIG}",
        ]
    raise LocalClusterError(f"unknown process {name}")


def redis_argv(port: int, data_dir: Path) -> list[str]:
    """Redis as Berth ships it: loopback, AOF on, never evicting keys.

    ``appendfsync everysec``: every write reaches the kernel before Redis
    replies, so a killed redis-server loses nothing; only a power loss can cost
    the last second. ``always`` would also cover that at a large write cost.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        shutil.which("redis-server") or "/usr/bin/redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
    ]


def _ensure_tokens(directory: Path) -> dict[str, str]:
    path = directory / "tokens.csv"
    if not path.exists():
        admin, nobody = secrets.token_hex(16), secrets.token_hex(16)
        path.write_text(
            f'{admin},berth-admin,berth-admin,"system:masters"\n{nobody},nobody,nobody\n'
        )
        path.chmod(0o600)
    rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return {"admin": rows[0][0], "nobody": rows[1][0]}


def _write_kubeconfig(directory: Path, port: int, pki: Pki, token: str) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "berth-local",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority": str(pki.ca_cert),
                },
            }
        ],
        "users": [{"name": "berth-admin", "user": {"token": token}}],
        "contexts": [
            {"name": "berth-local", "context": {"cluster": "berth-local", "user": "berth-admin"}}
        ],
        "current-context": "berth-local",
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def _write_state(directory: Path, state: ClusterState) -> None:
    tmp = directory / "state.json.tmp"
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.chmod(0o600)  # it holds the admin tokens
    tmp.replace(directory / "state.json")  # atomic: a crash never leaves half a file


Check = Callable[[ClusterState], bool]


def _wait_ready(state: ClusterState, name: str, check: Check, deadline: float) -> None:
    record = state.processes[name]
    while time.monotonic() < deadline:
        if not is_running(record):
            raise LocalClusterError(
                f"{name} exited during start-up; its log ends:\n{log_tail(record)}"
            )
        if check(state):
            return
        time.sleep(0.2)
    raise LocalClusterError(f"{name} was not ready in time; its log ends:\n{log_tail(record)}")


def _apiserver_ready(state: ClusterState) -> bool:
    try:
        r = httpx.get(
            f"{state.apiserver_url}/readyz",
            headers={"Authorization": f"Bearer {state.admin_token}"},
            verify=ssl.create_default_context(cafile=state.ca_file),
            timeout=2.0,
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _port_open(port: int) -> Check:
    def check(_state: ClusterState) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def _healthz(port: int) -> Check:
    def check(_state: ClusterState) -> bool:
        try:
            # Self-signed serving certs of our own loopback processes.
            r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    return check


def _create_nodes(
    state: ClusterState,
    pools: node_pools.NodePools,
    *,
    tainted: bool,
    timeout_s: float,
    progress: Progress,
) -> None:
    bodies = node_pools.node_bodies(pools, tainted=tainted)
    progress(f"creating {len(bodies)} fake nodes")
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
    try:
        for body in bodies:
            try:
                k.call(k.core.create_node, body)
            except KubeConflict:
                # Already there from an earlier up (etcd data persists), still naming
                # that run's kubelet port; KWOK's node stage does not run again.
                name = body["metadata"]["name"]
                k.call(k.core.patch_node_status, name, _kubelet_endpoint(state.ports["kwok"]))
                # Taints as this start wants them (with or without real nodes beside).
                k.call(k.core.patch_node, name, {"spec": {"taints": body["spec"]["taints"]}})
        deadline = time.monotonic() + timeout_s
        names = {b["metadata"]["name"] for b in bodies}
        while time.monotonic() < deadline:
            ready = {
                n.metadata.name
                for n in k.call(k.core.list_node).items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            }
            sa_ready = _default_service_account_exists(k)
            if names <= ready and sa_ready:
                return
            time.sleep(0.2)
        raise LocalClusterError(
            f"fake nodes not Ready in time (kwok log: {state.processes['kwok'].log})"
        )
    finally:
        k.close()


def _kubelet_endpoint(port: int) -> dict[str, Any]:
    """A strategic-merge status patch: addresses merge by type, so Hostname stays."""
    return {
        "status": {
            "addresses": [{"type": "InternalIP", "address": KWOK_NODE_IP}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }
    }


def _default_service_account_exists(k: kube.Kube) -> bool:
    try:
        k.call(k.core.read_namespaced_service_account, "default", "default")
    except KubeError:
        return False
    return True


def state_json(directory: Path) -> str:
    state = read_state(directory)
    return json.dumps(state.model_dump() if state else {}, indent=2)
