"""``utilization_policy`` on real pods: a run whose GPUs idle for its window stops.

The real nodes' GPUs come from the project's device plugin, with no DCGM behind them,
so a stand-in exporter pod (labelled as the GPU Operator labels NVIDIA's) serves
``DCGM_FI_DEV_GPU_UTIL`` for the runs' pods from a ConfigMap. Everything else is
Berth's own path: the exporter found by its labels, its ``/metrics`` read through
the apiserver's pod proxy, the clocks in Redis, the stop. The check is called with
a clock the test moves, as beat would call it once the window has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local import cluster
from cli.local.realnode.configs import REAL_NODE_LABEL
from shared import kube
from shared.errors import KubeNotFound
from shared.settings import GpuMetricsSettings
from tests.polling import wait_until
from tests.realnode.conftest import DCGM_NAMESPACE
from tests.realnode.world import SMALL, START_S, apply, run, running, stop
from tests.stack import Stack
from workers.context import build_context
from workers.gpu_utilization import check_utilization

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

WINDOW_S = 300  # dstack's smallest time_window


@pytest.fixture
def exporter_namespace(real_kube: kube.Kube) -> Iterator[str]:
    k = real_kube
    k.call(k.core.create_namespace, {"metadata": {"name": DCGM_NAMESPACE}})
    try:
        yield DCGM_NAMESPACE
    finally:
        k.call(k.core.delete_namespace, DCGM_NAMESPACE)
        wait_until(
            lambda: _gone(k, DCGM_NAMESPACE), timeout=START_S, what="the exporter namespace gone"
        )


def _gone(k: kube.Kube, namespace: str) -> bool:
    try:
        k.call(k.core.read_namespace, namespace)
    except KubeNotFound:
        return True
    return False


def _start_exporter(
    k: kube.Kube, state: cluster.ClusterState, namespace: str, metrics: str
) -> None:
    assert state.real_nodes is not None
    k.call(
        k.core.create_namespaced_config_map,
        namespace,
        {"metadata": {"name": "dcgm"}, "data": {"metrics": metrics}},
    )
    pod = {
        "metadata": {"name": "dcgm-exporter", "labels": {"app": "nvidia-dcgm-exporter"}},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "containers": [
                {
                    "name": "exporter",
                    "image": state.real_nodes.images["run"],
                    "command": ["python3", "-m", "http.server", "9400", "-d", "/srv"],
                    "volumeMounts": [{"name": "metrics", "mountPath": "/srv"}],
                    # As NVIDIA's exporter has: Berth reads only exporters that are Ready.
                    "readinessProbe": {"tcpSocket": {"port": 9400}, "periodSeconds": 1},
                }
            ],
            "volumes": [{"name": "metrics", "configMap": {"name": "dcgm"}}],
        },
    }
    k.call(k.core.create_namespaced_pod, namespace, pod)

    def ready() -> bool:
        status = k.call(k.core.read_namespaced_pod, "dcgm-exporter", namespace).status
        return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])

    wait_until(ready, timeout=START_S, what="the stand-in DCGM exporter ready")


def test_a_run_whose_gpus_idle_for_its_window_stops_and_a_busy_one_keeps_running(
    real_stack: Stack,
    real_kube: kube.Kube,
    real_cluster: cluster.ClusterState,
    exporter_namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workers.gpu_utilization")
    names = {}
    for kind in ("idle", "busy"):
        names[kind] = apply(
            real_stack,
            tmp_path,
            f"""
            type: task
            name: {kind}-gpu
            utilization_policy: {{min_gpu_utilization: 10, time_window: {WINDOW_S}s}}
            commands: [sleep 600]
            {SMALL}
            """,
        )
    try:
        pods = {k: running(real_stack, n)["jobs"][0]["pod_name"] for k, n in names.items()}
        idle_id = run(real_stack, names["idle"])["id"]
        ns = real_stack.namespace
        metrics = (
            "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
            f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",namespace="{ns}",pod="{pods["idle"]}"}} 3\n'
            f'DCGM_FI_DEV_GPU_UTIL{{gpu="1",namespace="{ns}",pod="{pods["busy"]}"}} 91\n'
        )
        _start_exporter(real_kube, real_cluster, exporter_namespace, metrics)
        settings = real_stack.settings().model_copy(
            update={"gpu_metrics": GpuMetricsSettings(exporter_namespace=exporter_namespace)}
        )
        ctx = build_context(settings)
        # Beat does not look during the tests (real_env): this clock is the only one.
        start = time.time() + 3600
        assert check_utilization(ctx, now=start) == []  # first look: the clocks start
        assert check_utilization(ctx, now=start + WINDOW_S - 1) == []
        last = check_utilization(ctx, now=start + WINDOW_S)
        said = "\n".join(r.getMessage() for r in caplog.records)
        assert last == [names["idle"]], f"{said}\n{ctx.store.get_blob('gpu-busy:' + idle_id)}"

        def stopped() -> bool:
            return bool(
                run(real_stack, names["idle"])["status"] in ("terminated", "done", "aborted")
            )

        wait_until(stopped, timeout=START_S, what="the idle run stopped")
        idle = run(real_stack, names["idle"])
        assert "GPU utilisation stayed below 10% for 300 s" in idle["reason"], idle
        assert run(real_stack, names["busy"])["status"] == "running"
    finally:
        for name in names.values():
            stop(real_stack, name)
