"""The real-node tier: a local cluster whose nodes are real kubelets, and Berth on it.

Every run here really executes: the pods are containers started by containerd
on the kubelets of :mod:`cli.local.realnode`, from images built from Debian
packages. The cluster has no KWOK nodes, so nothing can land where it would not
run. Where the host cannot run the nodes (not root, tools missing), the whole
tier is skipped with the one-line reason, never passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.local import cluster, realnode
from cli.local.realnode import network
from cli.local.realnode.configs import CONTAINER_LOG_MAX_BYTES, REAL_NODE_LABEL
from shared import kube
from shared.errors import LocalClusterError
from tests.realnode.canary import check_nodes_run_pods
from tests.relay import Relay
from tests.stack import Stack, start_stack

NAMESPACE = "berth-real"
DCGM_NAMESPACE = "berth-dcgm"
JUMP_PORT = 30022  # a NodePort; the jump host answers on every node IP and 127.0.0.1
# Project "locked" runs in a namespace that enforces Pod Security "restricted"
# (test_restricted.py, with a stack of its own); its own jump host, in that
# namespace, needs its own NodePort.
LOCKED_PROJECT = "locked"
LOCKED_NAMESPACE = "berth-locked"
LOCKED_JUMP_PORT = 30023


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ClusterState]:
    try:
        realnode.node.preflight()
    except LocalClusterError as e:
        pytest.skip(f"real-node tier skipped: {e}")
    directory = tmp_path_factory.mktemp("real")
    pools = directory / "no-kwok-pools.yaml"
    pools.write_text("pools: []\n")
    state, _ = cluster.up(directory, pools_file=pools, real_nodes=2, timeout_s=180)
    try:
        k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
        try:
            check_nodes_run_pods(state, k)
        finally:
            k.close()
        yield state
    finally:
        cluster.down(directory, remove_images=True)  # 2 GiB a node, kept by nobody


@pytest.fixture(scope="session")
def real_kube(real_cluster: cluster.ClusterState) -> Iterator[kube.Kube]:
    k = kube.connect(kubeconfig=Path(real_cluster.kubeconfig), timeout=10.0)
    yield k
    k.close()


@pytest.fixture(scope="session")
def real_stack(
    real_cluster: cluster.ClusterState,
    real_kube: kube.Kube,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    assert real_cluster.real_nodes is not None
    real_kube.call(real_kube.core.create_namespace, {"metadata": {"name": NAMESPACE}})
    # dstack: true (test_dstack_in_berth.py): pods reach the loopback API through this.
    relay = Relay(real_cluster.real_nodes.ips[0])
    env = real_env(real_cluster) | {"BERTH_API__URL_FOR_RUNS": f"http://{relay.address}"}
    try:
        s = start_stack(
            real_cluster,
            tmp_path_factory.mktemp("real-stack"),
            namespace=NAMESPACE,
            workers=1,
            backend=real_backend(real_cluster, jump_port=JUMP_PORT),
            env=env,
            privileged_projects=("main",),  # docker: true (test_docker.py) runs privileged
        )
        relay.start(("127.0.0.1", int(s.url.rsplit(":", 1)[1])))
        # The guard drops what pods send the host but DNS; this one port is let through.
        network.open_port_to_pods(relay.host, relay.port)
        try:
            yield s
        finally:
            network.close_port_to_pods(relay.host, relay.port)
            s.stop()
    finally:
        relay.stop()


def real_backend(state: cluster.ClusterState, *, jump_port: int | None) -> dict[str, Any]:
    """The backend every project of a real-node stack gets: real nodes only."""
    assert state.real_nodes is not None
    backend: dict[str, Any] = {
        "pod": {"node_selector": {REAL_NODE_LABEL: "true"}},
        # Images without sshd (the "nosshd" one) get it from here; others use their own.
        "ssh_init_image": state.real_nodes.images["sshd-init"],
    }
    # None: no jump host at all (a stack's default would otherwise make one).
    backend["proxy_jump"] = (
        None if jump_port is None else {"hostname": state.real_nodes.ips[0], "port": jump_port}
    )
    return backend


def real_env(state: cluster.ClusterState) -> dict[str, str]:
    assert state.real_nodes is not None
    images = state.real_nodes.images
    return {
        "BERTH_DEFAULT_IMAGE": images["run"],
        "BERTH_SSH__JUMP_IMAGE": images["jump"],
        "BERTH_DIND_IMAGE": images["dind"],
        "BERTH_LOGS__NODE_LOG_MAX_BYTES": str(CONTAINER_LOG_MAX_BYTES),
        # utilization_policy reads a DCGM exporter here (tests/realnode/test_utilization.py
        # runs a stand-in: the nodes' GPUs are the device plugin's, with no DCGM behind them).
        "BERTH_GPU_METRICS__EXPORTER_NAMESPACE": DCGM_NAMESPACE,
        # ...with a clock of its own: a look of beat's (the real clock) before the test's
        # first would start the idle clock an hour before the test's, and the test's first
        # look would stop the run (seen once in CI). Beat never looks within a day.
        "BERTH_GPU_METRICS__CHECK_INTERVAL_S": "86400",
        # Sessions of dev environments with inactivity_duration counted every 3 s, not
        # every minute, so test_inactivity.py takes seconds; no other run is watched.
        "BERTH_SSH__ACTIVITY_INTERVAL_S": "3",
    }


@pytest.fixture(scope="session")
def team_volume_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host directory behind the ``team`` volume."""
    return tmp_path_factory.mktemp("team-volume")


@pytest.fixture(scope="session")
def team_volume(real_stack: Stack, real_kube: kube.Kube, team_volume_dir: Path) -> str:
    """A registered volume on a claim bound to a directory of this host.

    The local cluster has no storage provisioner, so the claim is bound by hand
    to a hostPath PersistentVolume, as an operator would register existing storage.
    """
    directory = team_volume_dir
    k = real_kube
    k.call(
        k.core.create_persistent_volume,
        {
            "metadata": {"name": "berth-real-team"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": NAMESPACE, "name": "team-data"},
            },
        },
    )
    k.call(
        k.core.create_namespaced_persistent_volume_claim,
        NAMESPACE,
        {
            "metadata": {"name": "team-data"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": "berth-real-team",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    conf = directory.parent / "team.dstack.yml"
    conf.write_text("type: volume\nname: team\nbackend: kubernetes\nclaim_name: team-data\n")
    result = real_stack.cli("volume", "apply", "-f", str(conf))
    assert result.returncode == 0, result.stderr + result.stdout
    return "team"
