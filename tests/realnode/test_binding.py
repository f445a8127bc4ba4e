"""Berth binds a job's pod to the node it chose (``spec.nodeName``), and a kubelet that
refuses the pod sends the job back to the queue, where the kube-scheduler binds its
next pod.

The refusal is the real kubelet's admission: the proxy worker is frozen (SIGSTOP), so
the inventory the scheduler reads from Redis no longer changes; pods of another
tenant then take every GPU of both nodes; Berth, judging by what it last saw, binds
its pod to a full node, and the kubelet refuses it (its device manager first:
``UnexpectedAdmissionError``, no GPU left to allocate; ``OutOfnvidia.com/gpu`` where
no device plugin answers first).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from cli.local.cluster import ClusterState
from cli.local.realnode.configs import GPU_COUNT
from shared import kube
from shared.errors import KubeNotFound
from tests.polling import wait_until
from tests.realnode.world import SMALL, START_S, apply, events, logs, run, wait_status
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

GPU = "nvidia.com/gpu"
REFUSED = "the node's kubelet refused the pod ("


def test_a_pod_is_bound_to_the_node_berth_chose_without_the_scheduler(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    name = apply(real_stack, tmp_path, f"type: task\nname: bound\ncommands: [echo bound]\n{SMALL}")
    wait_status(real_stack, name, "done")
    job = run(real_stack, name)["jobs"][0]
    pod = real_kube.call(real_kube.core.read_namespaced_pod, job["pod_name"], real_stack.namespace)
    assert pod.spec.node_name == job["node"]
    assert _scheduled_events(real_kube, real_stack.namespace, job["pod_name"]) == []
    assert "bound" in logs(real_stack, name)


def test_a_pod_the_kubelet_refuses_goes_back_to_the_queue_and_then_runs(
    real_stack: Stack, real_cluster: ClusterState, real_kube: kube.Kube, tmp_path: Path
) -> None:
    assert real_cluster.real_nodes is not None
    proxy = next(p for p in real_stack.processes if p.name == "proxy-worker")
    image = real_cluster.real_nodes.images["run"]
    nodes = real_cluster.real_nodes.names
    with _frozen(proxy.pid), _gpus_taken(real_kube, real_stack.namespace, nodes, image):
        name = apply(
            real_stack, tmp_path, f"type: task\nname: refused\ncommands: [echo made it]\n{SMALL}"
        )
        # Beat's sweep reads the refused pod while the proxy worker cannot.
        try:
            wait_until(
                lambda: any(_refused(e["message"]) for e in events(real_stack, name)),
                timeout=START_S,
                what="the kubelet's refusal in the run's events",
            )
        except AssertionError as e:
            seen = [x["message"] for x in events(real_stack, name)]
            raise AssertionError(f"{e}\n{run(real_stack, name)}\n{seen}") from None
    # Room again: the job's next pod, bound by the kube-scheduler, runs.
    wait_status(real_stack, name, "done", timeout=2 * START_S)
    assert "made it" in logs(real_stack, name)
    final = run(real_stack, name)["jobs"][0]
    assert _scheduled_events(real_kube, real_stack.namespace, final["pod_name"]) != []


def _refused(message: str) -> bool:
    return "job 0 pending: " + REFUSED in message and GPU in message


@contextmanager
def _frozen(pid: int) -> Iterator[None]:
    time.sleep(1.0)  # let it publish what it has already seen
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


@contextmanager
def _gpus_taken(k: kube.Kube, namespace: str, nodes: list[str], image: str) -> Iterator[None]:
    """Another tenant's pods on ``nodes``, bound there directly, holding every free GPU."""
    names = []
    try:
        for node in nodes:
            free = GPU_COUNT - _gpus_in_use(k, node)
            if free <= 0:
                continue
            name = f"tenant-gpus-{node}"
            k.call(k.core.create_namespaced_pod, namespace, _tenant_pod(name, node, free, image))
            names.append(name)
        try:
            wait_until(
                lambda: all(_phase(k, namespace, n) == "Running" for n in names),
                timeout=START_S,
                what="the other tenant's pods running",
            )
        except AssertionError as e:
            pods = [k.call(k.core.read_namespaced_pod, n, namespace).status for n in names]
            raise AssertionError(f"{e}\n{pods}") from None
        yield
    finally:
        for name in names:
            with suppress(KubeNotFound):
                k.call(k.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0)


def _phase(k: kube.Kube, namespace: str, name: str) -> str:
    return str(k.call(k.core.read_namespaced_pod, name, namespace).status.phase)


def _tenant_pod(name: str, node: str, gpus: int, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "hold",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {GPU: str(gpus)},
                    },
                }
            ],
        },
    }


def _gpus_in_use(k: kube.Kube, node: str) -> int:
    pods = k.call(k.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
    return sum(
        int((c.resources.limits or {}).get(GPU, 0))
        for p in pods.items
        if p.status.phase not in ("Succeeded", "Failed")
        for c in p.spec.containers
        if c.resources is not None
    )


def _scheduled_events(k: kube.Kube, namespace: str, pod: str) -> list[Any]:
    """The kube-scheduler's "Successfully assigned" events for ``pod``."""
    selector = f"involvedObject.name={pod},involvedObject.kind=Pod,reason=Scheduled"
    return list(k.call(k.core.list_namespaced_event, namespace, field_selector=selector).items)
