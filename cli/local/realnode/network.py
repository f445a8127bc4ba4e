"""The real nodes' network, built so that no pod or Service packet leaves the machine.

Layout (all on the host's own network namespace):

- each real node ``i`` has a bridge ``berth-br<i>`` holding ``10.244.<i>.1/24``,
  which is also the node's IP; the CNI bridge plugin adopts it and puts the
  node's pods on it (no masquerade);
- the whole pod range and the whole Service range are routed to an ``ifb``
  device, ``berth-sink``, which drops what it is given: an address with no pod
  behind it (or a ClusterIP that kube-proxy did not rewrite) dies here instead
  of following the default route. A ``blackhole`` route would not do: it fails
  ``connect()`` at route lookup, before kube-proxy's DNAT gets to rewrite a
  ClusterIP to a pod IP. (These kernels have no ``dummy`` driver.)
- in the mangle table (which runs before kube-proxy's filter rules), forwarded
  traffic from the pod range may go only to the pod range, nothing is forwarded
  between a bridge and another interface, and a pod may open to the host only
  DNS (CoreDNS on node 0's IP); replies to the host's own connections pass.

The host state this changes is recorded first and put back by :func:`teardown`:
sysctls (the kubelet and kube-proxy set some), the device-plugin mount point,
and every link, route and chain made here.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from pydantic import BaseModel

from shared.errors import LocalClusterError

POD_CIDR = "10.244.0.0/16"
SINK = "berth-sink"
BRIDGE_PREFIX = "berth-br"
FORWARD_CHAIN = "BERTH-FORWARD"
INPUT_CHAIN = "BERTH-INPUT"
_IP_TIMEOUT_S = 10  # ip/iptables answer in milliseconds; a hang is a broken host
# Host settings the kubelet, kube-proxy and the bridge plugin change, put back on down.
INOTIFY_INSTANCES = 1024
SYSCTLS = (
    "fs.inotify.max_user_instances",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
)


NETNS_DIR = Path("/run/netns")


class HostSnapshot(BaseModel):
    """What the host looked like before the real nodes, to restore on down."""

    sysctls: dict[str, str]
    netns: list[str] | None = None
    """The CNI network namespaces already there (another runtime's: left alone); None in
    a snapshot saved before Berth recorded them (then none is removed)."""


@dataclass(frozen=True)
class NodeNet:
    index: int

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Network(f"10.244.{self.index}.0/24")

    @property
    def ip(self) -> str:
        return str(self.subnet.network_address + 1)


def node_nets(count: int) -> list[NodeNet]:
    return [NodeNet(i) for i in range(count)]


def setup(nets: list[NodeNet], *, service_cidr: str) -> HostSnapshot:
    """Bridges, the sink and the guard rules; returns the host state to restore."""
    snapshot = HostSnapshot(sysctls={k: _sysctl_get(k) for k in SYSCTLS}, netns=cni_netns())
    teardown(nets, snapshot=None)  # leftovers of a crashed run, if any
    for net in nets:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.ip}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
    _ip("link", "add", SINK, "type", "ifb")
    _ip("link", "set", SINK, "up")
    for cidr in (POD_CIDR, service_cidr):
        _ip("route", "add", cidr, "dev", SINK, "src", nets[0].ip)
    _guard_rules(nets[0].ip)
    # Pods on one bridge reach each other's Services only if bridged frames pass iptables.
    _sysctl_set("net.bridge.bridge-nf-call-iptables", "1")
    _sysctl_set("net.ipv4.ip_forward", "1")
    # Each kubelet takes 6 inotify instances, an apiserver 3, and the default of 128 per
    # user runs out when test clusters, a local cluster and the real nodes share a host
    # (kubelet: "inotify_init: too many open files", the node never registers). kind
    # documents the same raise; the host's value comes back at teardown.
    current = int(snapshot.sysctls["fs.inotify.max_user_instances"])
    _sysctl_set("fs.inotify.max_user_instances", str(max(current, INOTIFY_INSTANCES)))
    return snapshot


def teardown(nets: list[NodeNet], *, snapshot: HostSnapshot | None) -> None:
    """Remove what :func:`setup` made (each step tolerates its absence) and restore sysctls."""
    for table, chain, parent in (
        ("mangle", FORWARD_CHAIN, "FORWARD"),
        ("mangle", INPUT_CHAIN, "INPUT"),
    ):
        while _iptables_ok("-t", table, "-D", parent, "-j", chain):
            pass
        _iptables_ok("-t", table, "-F", chain)
        _iptables_ok("-t", table, "-X", chain)
    with contextlib.suppress(LocalClusterError):
        _ip("link", "del", SINK)
    for net in nets:
        with contextlib.suppress(LocalClusterError):
            _ip("link", "del", net.bridge)
    if snapshot is not None:
        if snapshot.netns is not None:
            remove_netns(kept=set(snapshot.netns))
        for key, value in snapshot.sysctls.items():
            with contextlib.suppress(OSError):
                _sysctl_set(key, value)


def cni_netns(directory: Path = NETNS_DIR) -> list[str]:
    """The network namespaces the CNI plugins name (``cni-<uuid>``) in ``directory``."""
    try:
        return sorted(path.name for path in directory.glob("cni-*"))
    except OSError:
        return []


def remove_netns(*, kept: set[str], directory: Path = NETNS_DIR) -> list[str]:
    """Delete the CNI network namespaces not in ``kept`` that no process is in; the ones
    deleted. The kubelet removes a pod's only after its sandbox is torn down, which a
    node stopped right after its pods were deleted never does: each would be left."""
    removed = []
    for name in cni_netns(directory):
        if name in kept or _in_use(directory / name):
            continue
        with contextlib.suppress(LocalClusterError):
            _ip("netns", "delete", name)
            removed.append(name)
    return removed


def _in_use(path: Path) -> bool:
    try:
        target = path.stat()
    except OSError:
        return False
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            found = ns.stat()
        except OSError:  # the process ended
            continue
        if (found.st_ino, found.st_dev) == (target.st_ino, target.st_dev):
            return True
    return False


def _guard_rules(dns_ip: str) -> None:
    ipt = ("-t", "mangle")
    _iptables(*ipt, "-N", FORWARD_CHAIN)
    _iptables(*ipt, "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
    bridges = f"{BRIDGE_PREFIX}+"
    rules: tuple[tuple[str, ...], ...] = (
        ("-s", POD_CIDR, "-d", POD_CIDR, "-j", "RETURN"),
        ("-s", POD_CIDR, "-j", "DROP"),
        ("-i", bridges, "!", "-o", bridges, "-j", "DROP"),
        ("!", "-i", bridges, "-o", bridges, "-j", "DROP"),
    )
    for rule in rules:
        _iptables(*ipt, "-A", FORWARD_CHAIN, *rule)
    _iptables(*ipt, "-N", INPUT_CHAIN)
    _iptables(*ipt, "-I", "INPUT", "1", "-j", INPUT_CHAIN)
    # Only what arrives from a bridge: the host's own connections to a node IP come
    # in on lo with a pod-range source address (the node IP) and must pass.
    pods = ("-i", bridges, "-s", POD_CIDR)
    rules = (
        (*pods, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"),
        (*pods, "-d", dns_ip, "-p", "udp", "--dport", "53", "-j", "RETURN"),
        (*pods, "-d", dns_ip, "-p", "tcp", "--dport", "53", "-j", "RETURN"),
        # Nothing else on the host is a pod's business: not the kubelet, not Redis.
        (*pods, "-j", "DROP"),
    )
    for rule in rules:
        _iptables(*ipt, "-A", INPUT_CHAIN, *rule)


def open_port_to_pods(ip: str, port: int) -> None:
    """Let pods reach one TCP port of a host address, ahead of the guard's DROP: the
    real-node tests' relay to Berth's loopback API (``dstack: true``). Nothing else."""
    _iptables("-t", "mangle", "-I", INPUT_CHAIN, "1", *_port_rule(ip, port))


def close_port_to_pods(ip: str, port: int) -> None:
    """Undo :func:`open_port_to_pods` (nothing to undo is fine)."""
    while _iptables_ok("-t", "mangle", "-D", INPUT_CHAIN, *_port_rule(ip, port)):
        pass


def _port_rule(ip: str, port: int) -> tuple[str, ...]:
    bridges = f"{BRIDGE_PREFIX}+"
    return (
        "-i",
        bridges,
        "-s",
        POD_CIDR,
        "-d",
        ip,
        "-p",
        "tcp",
        "--dport",
        str(port),
        "-j",
        "RETURN",
    )


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _iptables(*args: str) -> None:
    _run(["iptables", "-w", "5", *args])


def _iptables_ok(*args: str) -> bool:
    try:
        _iptables(*args)
    except LocalClusterError:
        return False
    return True


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LocalClusterError(f"{' '.join(argv)}: {e}") from e
    if proc.returncode != 0:
        raise LocalClusterError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _sysctl_get(key: str) -> str:
    try:
        return _sysctl_path(key).read_text().strip()
    except OSError as e:
        raise LocalClusterError(f"cannot read sysctl {key}: {e}") from e


def _sysctl_set(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value)
