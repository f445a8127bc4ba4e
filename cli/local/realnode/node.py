"""Start and stop the real nodes (see the package docstring for the design)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
from kubernetes import client
from pydantic import BaseModel

from cli.local import images
from cli.local.pki import Pki, issue_serving_pair
from cli.local.processes import (
    ProcessRecord,
    free_port,
    is_running,
    log_tail,
    start_process,
    stop_process,
)
from cli.local.realnode import configs, network
from cli.local.realnode.configs import NodePaths, node_name
from shared import kube
from shared.errors import KubeConflict, KubeError, KubeNotFound, LocalClusterError

DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
# One real node per machine set at a time: bridges, routes and iptables are host-wide.
OWNER_FILE = Path("/run/berth-real-nodes.json")
# containerd would try a registry for a mistyped image name; a closed loopback port
# makes that fail here and at once (the network rules would drop it anyway).
_NO_REGISTRY_ENV = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
_POD_DRAIN_S = 30.0  # pods get their grace period (Berth's is 30 s) to end on down

Progress = Callable[[str], None]
Save = Callable[[], None]


class RealNodes(BaseModel):
    """What ``start`` made, recorded in the cluster state so ``stop`` undoes exactly it."""

    count: int
    names: list[str]
    ips: list[str]
    images: dict[str, str]
    """Image name (run, jump, nosshd, sshd-init, pause) -> the reference pods use."""
    snapshot: network.HostSnapshot
    made_device_plugin_dir: bool


def start(
    *,
    count: int,
    directory: Path,
    bin_dir: Path,
    kubeconfig: Path,
    pki: Pki,
    service_cidr: str,
    processes: dict[str, ProcessRecord],
    save: Save,
    created: Callable[[RealNodes], None],
    timeout_s: float,
    progress: Progress,
) -> RealNodes:
    """Bring up ``count`` real nodes; the caller stops them with :func:`stop` on failure.

    ``created`` is told what exists as soon as the host has been changed, so a
    failure after that point can still be undone by :func:`stop`.
    """
    preflight()
    _check_disk(directory, count)
    _claim_host(directory)
    base = directory / "realnode"
    logs = directory / "logs"
    nets = network.node_nets(count)
    pause = bin_dir / "pause"
    refs = {spec.name: images.image_ref(spec) for spec in images.IMAGES}
    refs["pause"] = images.pause_ref(pause)
    archives = images.build_all(images_cache_dir(), pause, progress=progress)
    deadline = time.monotonic() + timeout_s  # counted after the (cached) image builds
    progress(f"starting {count} real node(s): network")
    made_dir = not DEVICE_PLUGIN_DIR.exists()
    snapshot = network.setup(nets, service_cidr=service_cidr)
    nodes = RealNodes(
        count=count,
        names=[node_name(i) for i in range(count)],
        ips=[n.ip for n in nets],
        images=refs,
        snapshot=snapshot,
        made_device_plugin_dir=made_dir,
    )
    created(nodes)
    DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
    _forget_nodes(nodes.names, kubeconfig)
    resolv = base / "resolv.conf"
    base.mkdir(parents=True, exist_ok=True)
    resolv.write_text("# pods resolve only the cluster domain (see cli/local/realnode)\n")
    all_paths = [NodePaths.of(directory, net.index) for net in nets]
    for net, paths in zip(nets, all_paths, strict=True):
        _write_node_files(paths, net, pki=pki, pause_image=refs["pause"], resolv=resolv)
        _make_cgroup(configs.cgroup_root(net.index))
        name = f"containerd-{net.index}"
        progress(f"starting {name}")
        processes[name] = start_process(
            name, _containerd_argv(paths), log_dir=logs, env=_NO_REGISTRY_ENV
        )
        save()
    for net, paths in zip(nets, all_paths, strict=True):
        _wait(processes[f"containerd-{net.index}"], partial(_containerd_ready, paths), deadline)
    # Each containerd unpacks every image into its own store (the slow part of a first
    # start): all at once, while the kubelets start. No pod can ask for an image before
    # this returns: Berth starts only once the nodes are up.
    progress("importing the images into each node's containerd")
    with ThreadPoolExecutor(max_workers=len(nets)) as pool:
        imports = [
            pool.submit(images.import_archives, _ctr(paths), archives, refs) for paths in all_paths
        ]
        for net, paths in zip(nets, all_paths, strict=True):
            _start_node(net, paths, bin_dir, kubeconfig, pki, resolv, processes, logs)
        save()
        _start_shared(nodes, bin_dir, kubeconfig, base, processes, save, deadline, progress)
        for done in imports:
            done.result()
    _wait_nodes(nodes, kubeconfig, processes, deadline, progress)
    return nodes


def stop(
    nodes: RealNodes, *, kubeconfig: Path, processes: dict[str, ProcessRecord], apiserver_up: bool
) -> None:
    """End every pod and process of the nodes, then put the host back as it was."""
    if apiserver_up:
        _drain(nodes, kubeconfig)
    for name in ("kube-proxy", "coredns"):
        record = processes.get(name)
        if record is not None:
            stop_process(record)
    for i in range(nodes.count):
        for name in (f"device-plugin-{i}", f"kubelet-{i}", f"containerd-{i}"):
            record = processes.get(name)
            if record is not None:
                stop_process(record)
        _kill_cgroup(configs.cgroup_root(i))
    _kube_proxy_cleanup(processes.get("kube-proxy"))
    network.teardown(network.node_nets(nodes.count), snapshot=nodes.snapshot)
    if nodes.made_device_plugin_dir:
        with contextlib.suppress(OSError):
            DEVICE_PLUGIN_DIR.rmdir()
            DEVICE_PLUGIN_DIR.parent.rmdir()
    _release_host()


def remove_images(directory: Path) -> list[Path]:
    """Delete each stopped node's containerd store (the images unpacked into it, about
    2 GiB a node); the next start imports them again from the build cache (~40 s).

    containerd mounts its snapshots in a mount namespace of its own, which ended with
    it; a store that still shows a mount on this host is left alone and named.
    """
    removed = []
    for store in sorted((directory / "realnode").glob("node-*/containerd-root")):
        mounted = [m for m in _mount_points() if m == store or store in m.parents]
        if mounted:
            raise LocalClusterError(f"{store} still has mounts ({mounted[0]}): stop the node first")
        shutil.rmtree(store)
        removed.append(store)
    return removed


# Each node's containerd keeps every image twice, packed and unpacked: 2.2 GiB measured.
_DISK_PER_NODE = int(2.5 * 2**30)


def _check_disk(directory: Path, count: int) -> None:
    """Refuse at once, naming the figure, where the images cannot be unpacked: a full
    disk otherwise shows much later as pods that never start."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < count * _DISK_PER_NODE:
        raise LocalClusterError(
            f"{count} real node(s) need {count * _DISK_PER_NODE / 2**30:.1f} GiB free under"
            f" {directory} for their images; {free / 2**30:.1f} GiB is"
            " (free some, or: berth local down --remove-images)"
        )


def _mount_points() -> list[Path]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return [Path(line.split()[1]) for line in mounts if len(line.split()) > 1]


def preflight() -> None:
    """Say in one line why this host cannot run the real nodes, if it cannot."""
    if os.geteuid() != 0:
        raise LocalClusterError("real nodes need root (containerd, bridges, iptables)")
    missing = [
        tool
        for tool in ("containerd", "runc", "iptables", "ip", "nsenter", "unshare", "mmdebstrap")
        if shutil.which(tool) is None
    ]
    if missing:
        raise LocalClusterError(
            f"real nodes need {', '.join(missing)}: run scripts/install.sh (or --no-real-node)"
        )
    if not Path("/usr/lib/cni/bridge").exists():
        raise LocalClusterError("real nodes need the CNI plugins (containernetworking-plugins)")


def images_cache_dir() -> Path:
    return Path(os.environ.get("BERTH_CACHE_DIR", Path.home() / ".cache" / "berth")) / "images"


def _claim_host(directory: Path) -> None:
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        owner = None
    if owner is not None and owner != directory and (owner / "state.json").exists():
        raise LocalClusterError(
            f"real nodes already run for the local cluster in {owner} "
            "(one set per machine: stop that one, or start with --no-real-node)"
        )
    OWNER_FILE.write_text(str(directory))


def _release_host() -> None:
    OWNER_FILE.unlink(missing_ok=True)


def _write_node_files(
    paths: NodePaths, net: network.NodeNet, *, pki: Pki, pause_image: str, resolv: Path
) -> None:
    paths.base.mkdir(parents=True, exist_ok=True)
    paths.cni_conf_dir.mkdir(exist_ok=True)
    paths.device_plugins.mkdir(exist_ok=True)
    paths.pod_logs.mkdir(exist_ok=True)
    paths.containerd_config.write_text(
        configs.containerd_toml(paths, pause_image=pause_image, index=net.index)
    )
    (paths.cni_conf_dir / "10-berth.conflist").write_text(configs.cni_conflist(paths, net))
    issue_serving_pair(
        pki, node_name(net.index), [net.ip, "127.0.0.1"], paths.serving_cert, paths.serving_key
    )


def _start_node(
    net: network.NodeNet,
    paths: NodePaths,
    bin_dir: Path,
    kubeconfig: Path,
    pki: Pki,
    resolv: Path,
    processes: dict[str, ProcessRecord],
    logs: Path,
) -> None:
    """The node's kubelet and device plugin, inside its containerd's mount namespace."""
    mnt = f"--mount=/proc/{processes[f'containerd-{net.index}'].pid}/ns/mnt"
    paths.kubelet_config.write_text(
        configs.kubelet_config(
            paths,
            net,
            index=net.index,
            port=free_port(),
            healthz_port=free_port(),
            ca_file=pki.ca_cert,
            resolv_conf=resolv,
        )
    )
    name = f"kubelet-{net.index}"
    processes[name] = start_process(
        name,
        ["nsenter", mnt, "--", *_kubelet_argv(bin_dir, paths, net, kubeconfig)],
        log_dir=logs,
    )
    name = f"device-plugin-{net.index}"
    processes[name] = start_process(
        name,
        [
            "nsenter",
            mnt,
            "--",
            str(bin_dir / "berth-device-plugin"),
            f"--count={configs.GPU_COUNT}",
            f"--id-prefix=GPU-{node_name(net.index)}",
        ],
        log_dir=logs,
    )


def _containerd_argv(paths: NodePaths) -> list[str]:
    # A mount namespace of the node's own, where the device-plugin directory is the node's.
    script = (
        f"mount --bind {paths.device_plugins} {DEVICE_PLUGIN_DIR} && "
        f"exec containerd --config {paths.containerd_config}"
    )
    return ["unshare", "--mount", "--propagation", "slave", "--", "/bin/sh", "-c", script]


def _kubelet_argv(bin_dir: Path, paths: NodePaths, net: network.NodeNet, kc: Path) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in configs.node_labels().items())
    return [
        str(bin_dir / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kc}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.base / 'kubelet-pki'}",
        f"--hostname-override={node_name(net.index)}",
        f"--node-ip={net.ip}",
        f"--node-labels={labels}",
        "--v=0",
    ]


def _start_shared(
    nodes: RealNodes,
    bin_dir: Path,
    kubeconfig: Path,
    base: Path,
    processes: dict[str, ProcessRecord],
    save: Save,
    deadline: float,
    progress: Progress,
) -> None:
    logs = base.parent / "logs"
    ready_port, health_port, proxy_health, proxy_metrics = (free_port() for _ in range(4))
    corefile = base / "Corefile"
    corefile.write_text(
        configs.corefile(
            bind_ip=nodes.ips[0],
            kubeconfig=kubeconfig,
            ready_port=ready_port,
            health_port=health_port,
        )
    )
    progress("starting coredns and kube-proxy")
    processes["coredns"] = start_process(
        "coredns", [str(bin_dir / "coredns"), "-conf", str(corefile)], log_dir=logs
    )
    processes["kube-proxy"] = start_process(
        "kube-proxy",
        [
            str(bin_dir / "kube-proxy"),
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={nodes.names[0]}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={network.POD_CIDR}",
            # NodePorts on the nodes' own IPs and loopback only, never the host's interfaces.
            "--nodeport-addresses=" + ",".join([f"{ip}/32" for ip in nodes.ips] + ["127.0.0.1/32"]),
            "--iptables-localhost-nodeports=true",
            # 0: leave the host's conntrack sysctls alone.
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            f"--healthz-bind-address=127.0.0.1:{proxy_health}",
            f"--metrics-bind-address=127.0.0.1:{proxy_metrics}",
            "--v=0",
        ],
        log_dir=logs,
    )
    save()
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        service, endpoints = configs.kube_dns_objects(nodes.ips[0])
        discovery = client.DiscoveryV1Api(k.api)
        for read, create, body in (
            (k.core.read_namespaced_service, k.core.create_namespaced_service, service),
            (
                discovery.read_namespaced_endpoint_slice,
                discovery.create_namespaced_endpoint_slice,
                endpoints,
            ),
        ):
            # Read first: a second create of the Service is refused for its IP (422), not 409.
            try:
                k.call(read, body["metadata"]["name"], "kube-system")
            except KubeNotFound:
                with contextlib.suppress(KubeConflict):
                    k.call(create, "kube-system", body)
    finally:
        k.close()
    _wait(processes["coredns"], lambda: _http_ok(f"http://127.0.0.1:{ready_port}/ready"), deadline)
    _wait(
        processes["kube-proxy"],
        lambda: _http_ok(f"http://127.0.0.1:{proxy_health}/healthz"),
        deadline,
    )


def _wait_nodes(
    nodes: RealNodes,
    kubeconfig: Path,
    processes: dict[str, ProcessRecord],
    deadline: float,
    progress: Progress,
) -> None:
    """Every node Ready with its fake GPUs allocatable."""
    progress("waiting for the real nodes to be Ready with their GPUs")
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        while time.monotonic() < deadline:
            for i in range(nodes.count):
                for name in (f"kubelet-{i}", f"device-plugin-{i}", f"containerd-{i}"):
                    if not is_running(processes[name]):
                        raise LocalClusterError(
                            f"{name} exited during start-up; its log ends:\n"
                            f"{log_tail(processes[name])}"
                        )
            ready = 0
            for n in k.call(k.core.list_node).items:
                if n.metadata.name not in nodes.names:
                    continue
                ok = any(
                    c.type == "Ready" and c.status == "True" for c in n.status.conditions or []
                )
                gpus = (n.status.allocatable or {}).get("nvidia.com/gpu")
                ready += ok and gpus == str(configs.GPU_COUNT)
            if ready == nodes.count:
                return
            time.sleep(0.2)
    finally:
        k.close()
    raise LocalClusterError(
        "the real nodes were not Ready with their GPUs in time; kubelet log ends:\n"
        + log_tail(processes["kubelet-0"])
    )


def _forget_nodes(names: list[str], kubeconfig: Path) -> None:
    """Delete Node objects an earlier start left in etcd.

    A kubelet re-registering an existing Node keeps its old labels, so a node
    from an older Berth would lack today's; and its pods' records end with it.
    """
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        for name in names:
            with contextlib.suppress(KubeNotFound):
                k.call(k.core.delete_node, name)
    finally:
        k.close()


def _drain(nodes: RealNodes, kubeconfig: Path) -> None:
    """Delete the nodes' pods and give them their grace period, so each ends as on a cluster."""
    try:
        k = kube.connect(kubeconfig=kubeconfig, timeout=5.0)
    except KubeError:
        return
    try:
        deadline = time.monotonic() + _POD_DRAIN_S
        for name in nodes.names:
            selector = f"spec.nodeName={name}"
            for pod in k.call(k.core.list_pod_for_all_namespaces, field_selector=selector).items:
                with contextlib.suppress(KubeError):
                    k.call(k.core.delete_namespaced_pod, pod.metadata.name, pod.metadata.namespace)
        while time.monotonic() < deadline:
            left = sum(
                len(
                    k.call(
                        k.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={name}"
                    ).items
                )
                for name in nodes.names
            )
            if left == 0:
                return
            time.sleep(0.5)
    except KubeError:
        return  # the apiserver is going or gone: the cgroup sweep ends what is left
    finally:
        k.close()


def _make_cgroup(root: str) -> None:
    """Create the node's cgroup in every v1 hierarchy (the kubelet wants it to exist)."""
    for hierarchy in _hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name.startswith("cpuset"):
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (path / f).read_text().strip():
                    (path / f).write_text((hierarchy / f).read_text())


def _kill_cgroup(root: str) -> None:
    """SIGKILL every process left in the node's cgroup tree, then remove the tree."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        pids = _cgroup_pids(root)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for hierarchy in _hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _cgroup_pids(root: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids |= {int(x) for x in procs.read_text().split()}
    return pids


def _hierarchies() -> list[Path]:
    # cgroup v1: one directory per mounted hierarchy; skip the v2 "unified" one and links.
    base = Path("/sys/fs/cgroup")
    return [
        p
        for p in sorted(base.iterdir())
        if p.is_dir() and not p.is_symlink() and p.name != "unified"
    ]


def _kube_proxy_cleanup(record: ProcessRecord | None) -> None:
    """kube-proxy --cleanup, plus the chains it and the kubelet leave behind."""
    if record is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [record.argv[0], "--cleanup"], capture_output=True, timeout=30, check=False
            )
    for tool in ("iptables", "ip6tables"):
        for table, chain in (
            ("filter", "KUBE-FIREWALL"),
            ("filter", "KUBE-KUBELET-CANARY"),
            ("nat", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-IPTABLES-HINT"),
            ("mangle", "KUBE-PROXY-CANARY"),
            ("nat", "KUBE-PROXY-CANARY"),
            ("filter", "KUBE-PROXY-CANARY"),
        ):
            for parent in ("INPUT", "OUTPUT", "FORWARD"):
                while _ok([tool, "-w", "5", "-t", table, "-D", parent, "-j", chain]):
                    pass
            _ok([tool, "-w", "5", "-t", table, "-F", chain])
            _ok([tool, "-w", "5", "-t", table, "-X", chain])


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _ctr(paths: NodePaths) -> list[str]:
    return ["ctr", "--address", str(paths.containerd_socket), "--namespace", "k8s.io"]


def _containerd_ready(paths: NodePaths) -> bool:
    if not paths.containerd_socket.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(paths.containerd_socket))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(record: ProcessRecord, check: Callable[[], bool], deadline: float) -> None:
    while time.monotonic() < deadline:
        if not is_running(record):
            raise LocalClusterError(
                f"{record.name} exited during start-up; its log ends:\n{log_tail(record)}"
            )
        if check():
            return
        time.sleep(0.1)
    raise LocalClusterError(
        f"{record.name} was not ready in time; its log ends:\n{log_tail(record)}"
    )
