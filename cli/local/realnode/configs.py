"""Configuration files of the real nodes' daemons, as pure functions of their paths.

Every value that differs from a daemon's default says why here, because each
was needed on these machines (cgroup v1, no swap, 2 cores, no registry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cli.local.realnode.network import NodeNet

CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS_IP = "10.0.0.10"  # inside the Service range; the kubelet writes it into pods
# Not under berth.dev/: those keys are Berth's own, refused in operator selectors.
REAL_NODE_LABEL = "berth.local/real-node"
GPU_PRODUCT = "NVIDIA-L4"  # a product the catalogue knows, unlike any KWOK pool's
GPU_MEMORY_MIB = 23034
GPU_COUNT = 8
CONTAINER_LOG_MAX_BYTES = 1024 * 1024
"""The kubelet's containerLogMaxSize here; Berth is told it (``logs.node_log_max_bytes``)."""


@dataclass(frozen=True)
class NodePaths:
    """Where node ``index`` keeps its state, under the cluster's directory."""

    base: Path

    @classmethod
    def of(cls, cluster_directory: Path, index: int) -> NodePaths:
        """Node ``index``'s paths in the local cluster at ``cluster_directory``."""
        return cls(cluster_directory / "realnode" / f"node-{index}")

    @property
    def containerd_socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.base / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.base / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.base / "kubelet.yaml"

    @property
    def pod_logs(self) -> Path:
        """The kubelet's ``podLogsDir`` (/var/log/pods by default): its own, because
        a kubelet's garbage collector deletes every pod log directory there whose pod it
        does not know, so two kubelets sharing one deleted each other's running logs."""
        return self.base / "pod-logs"

    @property
    def device_plugins(self) -> Path:
        """Bind-mounted over /var/lib/kubelet/device-plugins in the node's mount namespace."""
        return self.base / "device-plugins"

    @property
    def serving_cert(self) -> Path:
        return self.base / "kubelet-serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.base / "kubelet-serving.key"


def node_name(index: int) -> str:
    return f"berth-real-{index}"


def cgroup_root(index: int) -> str:
    """Each kubelet (and its containerd) gets its own cgroup tree: two kubelets
    under one ``kubepods`` would each delete the other's pods as orphans."""
    return f"/berth-real-{index}"


def containerd_toml(paths: NodePaths, *, pause_image: str, index: int) -> str:
    # TOML written by hand: it is small, and Python has no TOML writer in the stdlib.
    return f"""\
version = 2
root = "{paths.base / "containerd-root"}"
state = "{paths.base / "containerd-state"}"
# Block-device and filesystem snapshotters this machine lacks only add start-up noise.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.base / "containerd-ttrpc.sock"}"

[debug]
  level = "warn"

[metrics]
  address = ""

[cgroup]
  # The daemon and every shim it starts live under the node's cgroup tree, so
  # `down` can find and stop each process of the node by it.
  path = "{cgroup_root(index)}/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  # Built locally (cli/local/images.py); a bare name would mean docker.io.
  sandbox_image = "{pause_image}"
  # runc may not lower oom_score_adj on these machines.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{paths.cni_conf_dir}"
"""


def cni_conflist(paths: NodePaths, net: NodeNet) -> str:
    doc = {
        "cniVersion": "0.4.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,  # made before the kubelet starts; the plugin adopts it
                "isGateway": True,
                "ipMasq": False,  # pods never reach past the machine (network.py)
                "hairpinMode": True,  # a pod reaching itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(net.subnet), "gateway": net.ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.base / "ipam"),
                },
            }
        ],
    }
    return json.dumps(doc, indent=2)


def kubelet_config(
    paths: NodePaths,
    net: NodeNet,
    *,
    index: int,
    port: int,
    healthz_port: int,
    ca_file: Path,
    resolv_conf: Path,
) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # These machines run cgroup v1 and have no swap; kubelet 1.36 refuses v1 by default.
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(index),
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": net.ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(paths.serving_cert),
        "tlsPrivateKeyFile": str(paths.serving_key),
        # The apiserver presents a client certificate of the cluster CA (pki.py);
        # nobody else is let in, and what it may do is asked of the apiserver.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [KUBE_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # No host nameserver may leak into pods: the cluster domain is all they resolve.
        "resolvConf": str(resolv_conf),
        # Images come only from cli/local/images.py and cannot be pulled again:
        # never garbage-collect them, and never evict for a nearly full host disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        # Small container logs, rotated often: the log API then serves only the last
        # MiB of a chatty run, so what `berth logs` shows beyond it provably comes from
        # Berth's own copy (workers/collector), as on any long run elsewhere.
        "containerLogMaxSize": f"{CONTAINER_LOG_MAX_BYTES // 1024}Ki",
        "podLogsDir": str(paths.pod_logs),
        "containerLogMaxFiles": 2,
        "containerLogMonitorInterval": "3s",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def node_labels() -> dict[str, str]:
    """What the GPU Operator's feature discovery would put on a node with these GPUs."""
    return {
        REAL_NODE_LABEL: "true",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": GPU_PRODUCT,
        "nvidia.com/gpu.count": str(GPU_COUNT),
        "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB),
    }


def corefile(*, bind_ip: str, kubeconfig: Path, ready_port: int, health_port: int) -> str:
    # One server block for the cluster domain and reverse lookups; no `forward`
    # anywhere (the binary does not even contain it), so nothing else resolves.
    return f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {bind_ip}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
    }}
    cache 5
}}
"""


def kube_dns_objects(coredns_ip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A selector-less Service at the kubelet's clusterDNS address and its EndpointSlice,
    pointing at CoreDNS, which runs on the host at node 0's IP."""
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": KUBE_DNS_IP, "ports": [dict(p, targetPort=53) for p in ports]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-berth",
            "namespace": "kube-system",
            "labels": {"kubernetes.io/service-name": "kube-dns"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [coredns_ip], "conditions": {"ready": True}}],
        "ports": ports,
    }
    return service, endpoints
