"""The real nodes themselves: two kubelets on one host keep out of each other's way."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from cli.local.realnode.configs import NodePaths
from tests.realnode.world import SMALL, apply, run, running
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_each_kubelet_takes_its_whole_configuration(real_cluster: ClusterState) -> None:
    # A field the kubelet does not know is dropped with only this line in its log (a
    # misspelt podLogsDir once left both kubelets sharing /var/log/pods).
    kubelets = [p for name, p in real_cluster.processes.items() if name.startswith("kubelet-")]
    assert len(kubelets) == 2
    for record in kubelets:
        text = Path(record.log).read_text(errors="replace")
        assert "strict decoding failed" not in text, text[:2000]


def test_a_pods_output_is_kept_in_its_own_nodes_log_directory(
    real_stack: Stack, real_cluster: ClusterState, tmp_path: Path
) -> None:
    # In one shared directory each kubelet's garbage collector deleted the other
    # node's running containers' log files once a minute (lines lost to readers).
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: where-logs
        commands:
          - echo started; sleep 60
        {SMALL}
        """,
    )
    running(real_stack, name)
    job = run(real_stack, name)["jobs"][0]
    index = int(job["node"].rsplit("-", 1)[1])
    directory = Path(real_cluster.directory)
    prefix = f"{real_stack.namespace}_{job['pod_name']}_"
    mine = [d.name for d in NodePaths.of(directory, index).pod_logs.iterdir()]
    other = [d.name for d in NodePaths.of(directory, 1 - index).pod_logs.iterdir()]
    assert any(d.startswith(prefix) for d in mine), mine
    assert not any(d.startswith(prefix) for d in other), other
    shared = Path("/var/log/pods")
    assert not shared.exists() or not any(d.name.startswith(prefix) for d in shared.iterdir())
    real_stack.cli("stop", name)
