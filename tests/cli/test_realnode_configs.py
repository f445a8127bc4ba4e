"""The real nodes' configuration: what two kubelets on one host must not share."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli.local.realnode.configs import NodePaths, kubelet_config
from cli.local.realnode.network import NodeNet


def _kubelet(tmp_path: Path, index: int) -> dict[str, object]:
    paths = NodePaths(tmp_path / f"node-{index}")
    text = kubelet_config(
        paths,
        NodeNet(index),
        index=index,
        port=10250 + index,
        healthz_port=10260 + index,
        ca_file=tmp_path / "ca.crt",
        resolv_conf=tmp_path / "resolv.conf",
    )
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_each_kubelet_keeps_pod_logs_in_its_own_directory(tmp_path: Path) -> None:
    # A kubelet's garbage collector deletes every pod log directory it finds whose pod
    # it does not run: in a shared /var/log/pods each deleted the other's running logs.
    first, second = _kubelet(tmp_path, 0), _kubelet(tmp_path, 1)
    assert first["podLogsDir"] == str(tmp_path / "node-0" / "pod-logs")
    assert second["podLogsDir"] == str(tmp_path / "node-1" / "pod-logs")
    assert first["cgroupRoot"] != second["cgroupRoot"]
