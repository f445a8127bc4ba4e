"""The real nodes are air-gapped: no packet for a pod or Service address leaves the machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from cli.local.processes import start_process, stop_process
from cli.local.realnode.configs import NodePaths
from tests.polling import wait_until
from tests.realnode.world import apply_and_follow
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

PROBE = """
type: task
name: probe
commands:
  - getent hosts example.com && echo RESOLVED-OUTSIDE || echo no-outside-dns
  - getent hosts kubernetes.default.svc.cluster.local >/dev/null && echo cluster-dns-ok
  - curl -s -m 3 http://10.0.99.99/ && echo REACHED-SERVICE || echo no-such-service
  - curl -s -m 3 http://10.244.200.5/ && echo REACHED-POD || echo no-such-pod
  - curl -s -m 3 http://{host_ip}:22/ || echo host-probe-done
  - curl -s -m 3 -k https://{node_ip}:{kubelet_port}/pods && echo REACHED-KUBELET || echo no-kubelet
resources: {{gpu: 1, cpu: 1.., memory: 0.1GB..}}
"""


def test_pod_traffic_to_unknown_addresses_and_outside_names_never_leaves_the_machine(
    real_stack: Stack, real_cluster: ClusterState, tmp_path: Path
) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (scripts/install.sh installs it)")
    assert real_cluster.real_nodes is not None
    route = subprocess.run(
        ["ip", "-o", "route", "show", "default"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    if "dev" not in route:
        pytest.skip("no default route: nothing could leave this machine anyway")
    device = route[route.index("dev") + 1]
    host_ip = (
        subprocess.run(
            ["ip", "-o", "-4", "addr", "show", device], capture_output=True, text=True, timeout=10
        )
        .stdout.split()[3]
        .split("/")[0]
    )
    capture = tmp_path / "leaks.pcap"
    tcpdump = start_process(
        "tcpdump",
        [
            "tcpdump",
            "-i",
            device,
            "-n",
            "-U",
            "-w",
            str(capture),
            "net 10.244.0.0/16 or net 10.0.0.0/16",
        ],
        log_dir=tmp_path,
    )
    try:
        wait_until(
            lambda: "listening on" in Path(tcpdump.log).read_text(), timeout=30, what="tcpdump"
        )
        kubelet = _kubelet_port(real_cluster)
        result = apply_and_follow(
            real_stack,
            tmp_path,
            PROBE.format(
                host_ip=host_ip, node_ip=real_cluster.real_nodes.ips[0], kubelet_port=kubelet
            ),
        )
    finally:
        stop_process(tcpdump)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "no-outside-dns" in out and "RESOLVED-OUTSIDE" not in out
    assert "cluster-dns-ok" in out
    assert "no-such-service" in out and "no-such-pod" in out
    assert "no-kubelet" in out and "REACHED-KUBELET" not in out
    leaked = subprocess.run(
        ["tcpdump", "-n", "-r", str(capture)], capture_output=True, text=True, timeout=30
    )
    assert leaked.stdout.strip() == "", f"packets left through {device}:\n{leaked.stdout}"


def _kubelet_port(state: ClusterState) -> int:
    config = NodePaths.of(Path(state.directory), 0).kubelet_config
    for line in config.read_text().splitlines():
        if line.startswith("port:"):
            return int(line.split(":")[1])
    raise AssertionError(f"no port in {config}")
