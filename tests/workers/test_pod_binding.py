"""Who binds a job's pod to its node: Berth itself (``spec.nodeName``), or the kube-scheduler.

Berth has already chosen the node; binding there saves the scheduler's binding and
event writes. The scheduler still binds wherever it must choose or check something
Berth does not (``workers.podspec.binds_itself``).
"""

from __future__ import annotations

from typing import Any

from shared.configuration import NodePool, parse_run_configuration
from shared.configuration.kube_fields import PodSettings
from shared.queueing.namespace_only import SCHEDULER_NODE
from shared.state.records import Job, Placement, Run
from workers.podspec import ClaimMount, PodContext, build_job_objects

TASK = "type: task\nimage: x\nresources: {gpu: L40S:1}"
PINNED = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
            ]
        }
    }
}


def _pod(
    text: str = TASK, *, node: str = "n1", scheduler_binds: bool = False, **ctx: Any
) -> dict[str, Any]:
    run = Run(
        id="r", project="main", name="b", user="u", configuration={}, configuration_type="task"
    )
    job = Job(
        id="j",
        run_id="r",
        project="main",
        run_name="b",
        placement=Placement(node=node, gpu_resource="nvidia.com/gpu", gpus=1),
        scheduler_binds=scheduler_binds,
    )
    conf = parse_run_configuration(text)
    return build_job_objects(run, job, conf, PodContext(default_image="i", **ctx)).pod


def test_a_pod_on_a_node_berth_chose_is_bound_there_and_keeps_its_affinity() -> None:
    spec = _pod()["spec"]
    assert spec["nodeName"] == "n1"
    assert spec["affinity"] == PINNED  # the kubelet checks it too


def test_the_scheduler_binds_a_job_whose_pod_a_kubelet_refused() -> None:
    spec = _pod(scheduler_binds=True)["spec"]
    assert "nodeName" not in spec
    assert spec["affinity"] == PINNED


def test_the_scheduler_binds_where_it_chooses_the_node() -> None:
    affinity: dict[str, Any] = {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
    spec = _pod(node=SCHEDULER_NODE, scheduler_affinity=affinity)["spec"]
    assert "nodeName" not in spec
    assert spec["affinity"] == affinity


def test_the_scheduler_binds_a_pod_waiting_for_a_pool_node() -> None:
    pool = NodePool(name="l40s", gpu="L40S", gpus_per_node=4, max_nodes=2, labels={"g": "l40s"})
    spec = _pod(node="~pool:l40s:0", node_pool=pool)["spec"]
    assert "nodeName" not in spec


def test_the_scheduler_binds_a_pod_with_claims() -> None:
    # A WaitForFirstConsumer claim is provisioned for the node the scheduler picks.
    spec = _pod(TASK + "\nvolumes: ['data:/data']", claims={"data": ClaimMount("pvc-data")})["spec"]
    assert "nodeName" not in spec


def test_the_scheduler_binds_a_pod_with_the_operators_runtime_class() -> None:
    # A RuntimeClass may add its own node selector and overhead, which Berth does not weigh.
    spec = _pod(pod_settings=PodSettings(runtime_class_name="nvidia"))["spec"]
    assert "nodeName" not in spec
    assert spec["runtimeClassName"] == "nvidia"


def test_the_operators_node_selector_is_kept_for_the_kubelet_to_check() -> None:
    spec = _pod(pod_settings=PodSettings(node_selector={"pool": "gpu"}))["spec"]
    assert spec["nodeName"] == "n1"
    assert spec["nodeSelector"] == {"pool": "gpu"}
