"""Pod logs through the real apiserver: apiserver → KWOK's kubelet server → a file.

This is the code path of ``berth logs``; cli/local/pod_logs.py explains the
wiring and how a test chooses a pod's log lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cli.local import cluster, pod_logs
from shared import kube
from tests.polling import wait_until

pytestmark = pytest.mark.integration

FOLLOW_DEADLINE_S = 10.0  # the first line comes within ~0.1 s; this only bounds a hang


def _cpu_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def test_a_pod_s_logs_are_the_lines_its_logs_object_names(
    kube_admin: kube.Kube, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    pod_logs.set_pod_logs(
        kube_admin,
        Path(local_cluster.directory),
        namespace=namespace,
        pod="trainer",
        lines=["epoch 1 loss=0.9", "epoch 2 loss=0.5"],
    )
    _start_pod(kube_admin, namespace, "trainer")

    text = wait_until(
        lambda: _logs_or_none(kube_admin, namespace, "trainer"), timeout=30, what="pod logs"
    )

    assert text == "epoch 1 loss=0.9\nepoch 2 loss=0.5\n"


def test_following_a_pod_s_logs_streams_the_first_line_and_then_appended_ones(
    kube_admin: kube.Kube, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    path = pod_logs.set_pod_logs(
        kube_admin,
        Path(local_cluster.directory),
        namespace=namespace,
        pod="server",
        lines=["listening on :8000"],
    )
    _start_pod(kube_admin, namespace, "server")
    wait_until(lambda: _logs_or_none(kube_admin, namespace, "server"), timeout=30, what="logs")

    resp = kube_admin.call(
        kube_admin.core.read_namespaced_pod_log,
        "server",
        namespace,
        follow=True,
        _preload_content=False,
        # The read timeout bounds each wait for bytes, so a stuck stream fails the test.
        _request_timeout=(5.0, FOLLOW_DEADLINE_S),
    )
    try:
        started = time.monotonic()
        first = resp.readline()
        first_s = time.monotonic() - started
        pod_logs.write_log_lines(path, ["GET / 200"])
        second = resp.readline()
    finally:
        resp.close()

    assert first == b"listening on :8000\n"
    assert first_s < FOLLOW_DEADLINE_S
    assert second == b"GET / 200\n"


def test_a_pod_without_a_logs_object_has_empty_logs(kube_admin: kube.Kube, namespace: str) -> None:
    _start_pod(kube_admin, namespace, "quiet")

    text = kube_admin.call(kube_admin.core.read_namespaced_pod_log, "quiet", namespace)

    assert text == ""


def _start_pod(k: kube.Kube, namespace: str, name: str) -> None:
    k.call(k.core.create_namespaced_pod, namespace, _cpu_pod(name))
    wait_until(lambda: _running(k, namespace, name), timeout=30, what=f"{name} Running")


def _running(k: kube.Kube, namespace: str, name: str) -> bool:
    pod = k.call(k.core.read_namespaced_pod, name, namespace)
    return bool(pod.status.phase == "Running")


def _logs_or_none(k: kube.Kube, namespace: str, name: str) -> str | None:
    """The logs once KWOK has seen the pod's Logs object (its watch lags by milliseconds)."""
    text: str = k.call(k.core.read_namespaced_pod_log, name, namespace)
    return text or None
