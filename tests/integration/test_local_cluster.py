"""Smoke tests proving the local control plane is real: scheduler, KWOK, RBAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.local import cluster
from shared import kube
from shared.errors import KubeForbidden
from tests.polling import wait_until

pytestmark = pytest.mark.integration

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {
                        "requests": {"nvidia.com/gpu": str(gpus)},
                        "limits": {"nvidia.com/gpu": str(gpus)},
                    },
                }
            ],
        },
    }


def test_the_fake_nodes_carry_gpu_operator_labels_and_capacity(kube_admin: kube.Kube) -> None:
    nodes = {n.metadata.name: n for n in kube_admin.call(kube_admin.core.list_node).items}
    h100 = nodes["kwok-h100-0"]
    assert h100.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100.metadata.labels["nvidia.com/gpu.count"] == "8"
    assert h100.status.allocatable["nvidia.com/gpu"] == "8"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in h100.spec.taints)
    assert sum(1 for n in nodes if n.startswith("kwok-h100-")) == 4
    assert "nvidia.com/gpu" not in (nodes["kwok-cpu-0"].status.allocatable or {})


def test_a_one_gpu_pod_is_bound_to_a_gpu_node_and_kwok_reports_it_running(
    kube_admin: kube.Kube, namespace: str
) -> None:
    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _gpu_pod("one-gpu", 1))

    pod = wait_until(
        lambda: _pod_if_running(kube_admin, namespace, "one-gpu"), timeout=30, what="pod Running"
    )
    node = kube_admin.call(kube_admin.core.read_node, pod.spec.node_name)
    assert int(node.status.allocatable["nvidia.com/gpu"]) >= 1
    assert pod.status.pod_ip


def test_a_pod_asking_for_nine_gpus_stays_pending_with_failed_scheduling(
    kube_admin: kube.Kube, namespace: str
) -> None:
    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _gpu_pod("nine-gpus", 9))

    event = wait_until(
        lambda: _failed_scheduling_event(kube_admin, namespace, "nine-gpus"),
        timeout=30,
        what="FailedScheduling event",
    )
    assert "nvidia.com/gpu" in event.message
    pod = kube_admin.call(kube_admin.core.read_namespaced_pod, "nine-gpus", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_a_pod_with_kwok_run_for_completes_with_its_exit_code(
    kube_admin: kube.Kube, namespace: str
) -> None:
    body = _gpu_pod("fails", 1)
    body["spec"]["restartPolicy"] = "Never"
    body["spec"]["containers"][0]["env"] = [
        {"name": "KWOK_RUN_FOR", "value": "100ms"},
        {"name": "KWOK_EXIT_CODE", "value": "3"},
    ]
    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, body)

    pod = wait_until(
        lambda: _pod_in_phase(kube_admin, namespace, "fails", "Failed"), timeout=30, what="Failed"
    )
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_a_token_without_rbac_rights_gets_403(local_cluster: cluster.ClusterState) -> None:
    data = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": local_cluster.apiserver_url,
                    "certificate-authority": local_cluster.ca_file,
                },
            }
        ],
        "users": [{"name": "nobody", "user": {"token": local_cluster.nobody_token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nobody"}}],
        "current-context": "c",
    }
    nobody = kube.connect(kubeconfig_data=data)
    try:
        with pytest.raises(KubeForbidden, match="forbidden"):
            nobody.call(nobody.core.list_namespaced_pod, "default")
    finally:
        nobody.close()


def test_a_second_up_reports_the_running_cluster_and_starts_nothing(
    local_cluster: cluster.ClusterState,
) -> None:
    state, already = cluster.up(Path(local_cluster.directory))

    assert already
    assert {n: r.pid for n, r in state.processes.items()} == {
        n: r.pid for n, r in local_cluster.processes.items()
    }


def _pod_if_running(k: kube.Kube, namespace: str, name: str) -> Any:
    return _pod_in_phase(k, namespace, name, "Running")


def _pod_in_phase(k: kube.Kube, namespace: str, name: str, phase: str) -> Any:
    pod = k.call(k.core.read_namespaced_pod, name, namespace)
    return pod if pod.status.phase == phase else None


def _failed_scheduling_event(k: kube.Kube, namespace: str, pod: str) -> Any:
    events = k.call(
        k.core.list_namespaced_event,
        namespace,
        field_selector=f"involvedObject.name={pod},reason=FailedScheduling",
    ).items
    return events[0] if events else None
