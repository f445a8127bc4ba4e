"""What a pod's status means for its job, read from the pod's JSON as the apiserver sends it
(the proxy worker's watch hands it over unparsed) or from a client object."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from kubernetes import client

from shared.state.records import Job, RunStatus
from workers.inventory_watch import WatchedPod
from workers.pod_status import UNSCHEDULABLE_GRACE_S, PodVerdict, judge_pod

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC).timestamp()


def _job(status: RunStatus = RunStatus.PROVISIONING) -> Job:
    """A job whose pod is created, not yet seen running (unless ``status`` says so)."""
    return Job(id="j1", run_id="r1", project="p", run_name="r", pod_name="berth-r-0", status=status)


def _pod(status: dict[str, Any], *, probed: bool = False) -> dict[str, Any]:
    main: dict[str, Any] = {"name": "main", "image": "berth.local/run:x"}
    if probed:
        main["readinessProbe"] = {"httpGet": {"path": "/", "port": 8000}}
    return {
        "metadata": {"name": "berth-r-0", "creationTimestamp": "2026-12-06T11:00:00Z"},
        "spec": {"containers": [main]},
        "status": status,
    }


def _main_state(state: dict[str, Any]) -> list[dict[str, Any]]:
    """A sidecar that ended well, then the run's container."""
    return [_container("sidecar", {"terminated": {"exitCode": 0}}), _container("main", state)]


def _container(name: str, state: dict[str, Any]) -> dict[str, Any]:
    fields = {"image": "berth.local/run:x", "imageID": "", "ready": False, "restartCount": 0}
    return {"name": name, **fields, "state": state}


def _scheduled_false(since: str) -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available",
        "lastTransitionTime": since,
    }


CASES = [
    (
        "running",
        _pod({"phase": "Running", "podIP": "10.244.0.7"}),
        PodVerdict(RunStatus.RUNNING, "", pod_ip="10.244.0.7"),
    ),
    (
        "running, probed, not ready",
        _pod(
            {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
            probed=True,
        ),
        PodVerdict(RunStatus.RUNNING, "", ready=False),
    ),
    (
        "running, probed, ready",
        _pod(
            {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, probed=True
        ),
        PodVerdict(RunStatus.RUNNING, "", ready=True),
    ),
    (
        "succeeded",
        _pod({"phase": "Succeeded", "podIP": "10.244.0.8"}),
        PodVerdict(RunStatus.DONE, "", pod_ip="10.244.0.8", exit_code=0),
    ),
    (
        "exit code",
        _pod(
            {
                "phase": "Failed",
                "containerStatuses": _main_state(
                    {"terminated": {"exitCode": 3, "reason": "Error"}}
                ),
            }
        ),
        PodVerdict(RunStatus.FAILED, "exit code 3", exit_code=3, retry_event="error"),
    ),
    (
        "out of memory",
        _pod(
            {
                "phase": "Failed",
                "containerStatuses": _main_state(
                    {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
                ),
            }
        ),
        PodVerdict(
            RunStatus.FAILED,
            "out of memory (OOMKilled, exit code 137)",
            exit_code=137,
            retry_event="error",
        ),
    ),
    (
        "evicted",
        _pod({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
        PodVerdict(RunStatus.FAILED, "evicted: low on memory", retry_event="interruption"),
    ),
    (
        # What a kubelet answers a pod Berth bound to it (spec.nodeName) that it cannot
        # start: the job goes back to the queue, not to failed.
        "refused: out of GPUs",
        _pod(
            {
                "phase": "Failed",
                "reason": "OutOfnvidia.com/gpu",
                "message": "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu,"
                " requested: 1, used: 8, capacity: 8",
            }
        ),
        PodVerdict(
            RunStatus.PENDING,
            "the node's kubelet refused the pod (OutOfnvidia.com/gpu): Pod was rejected: Node"
            " didn't have enough resource: nvidia.com/gpu, requested: 1, used: 8, capacity: 8",
            refused=True,
        ),
    ),
    (
        "refused: a device plugin could not allocate",
        _pod({"phase": "Failed", "reason": "UnexpectedAdmissionError", "message": "no devices"}),
        PodVerdict(
            RunStatus.PENDING,
            "the node's kubelet refused the pod (UnexpectedAdmissionError): no devices",
            refused=True,
        ),
    ),
    (
        "refused: a taint it does not tolerate",
        _pod({"phase": "Failed", "reason": "TaintToleration"}),
        PodVerdict(
            RunStatus.PENDING, "the node's kubelet refused the pod (TaintToleration)", refused=True
        ),
    ),
    (
        "image pull",
        _pod(
            {
                "phase": "Pending",
                "containerStatuses": _main_state(
                    {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
                ),
            }
        ),
        PodVerdict(RunStatus.FAILED, "image pull failed (ErrImagePull): not found"),
    ),
    (
        "unschedulable past the grace",
        _pod({"phase": "Pending", "conditions": [_scheduled_false("2026-12-06T11:58:00Z")]}),
        PodVerdict(RunStatus.PENDING, "unschedulable: 0/3 nodes are available"),
    ),
    (
        "unschedulable within the grace",
        _pod({"phase": "Pending", "conditions": [_scheduled_false("2026-12-06T11:59:30Z")]}),
        None,
    ),
    ("pending", _pod({"phase": "Pending"}), None),
]


@pytest.mark.parametrize(("pod", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_pods_json_is_judged(pod: dict[str, Any], verdict: PodVerdict | None) -> None:
    assert judge_pod(pod, job=_job(), stop_requested=False, now=NOW) == verdict


@pytest.mark.parametrize(("pod", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_client_object_is_judged_as_its_json(
    pod: dict[str, Any], verdict: PodVerdict | None
) -> None:
    api = client.ApiClient()
    obj = api.deserialize(json.dumps(pod), "V1Pod", "application/json")  # the client's parse
    assert isinstance(obj, client.V1Pod)
    assert judge_pod(obj, job=_job(), stop_requested=False, now=NOW) == verdict


def test_a_running_jobs_pod_failing_for_its_node_is_an_interruption_not_a_refusal() -> None:
    # A running job cannot go back to the queue; a node shutting down under it is retried
    # as an interruption, as before Berth bound pods itself.
    pod = _pod({"phase": "Failed", "reason": "NodeShutdown", "message": "node shutting down"})
    verdict = judge_pod(pod, job=_job(RunStatus.RUNNING), stop_requested=False, now=NOW)
    assert verdict == PodVerdict(
        RunStatus.FAILED, "NodeShutdown: node shutting down", retry_event="interruption"
    )


def test_a_gone_pod_is_stopped_or_lost() -> None:
    assert judge_pod(None, job=_job(), stop_requested=True, now=NOW) == PodVerdict(
        RunStatus.TERMINATED, "stopped"
    )
    lost = judge_pod(None, job=_job(), stop_requested=False, now=NOW)
    assert lost is not None and lost.status == RunStatus.FAILED
    assert lost.retry_event == "interruption"
    never = _job().model_copy(update={"pod_name": None})
    assert judge_pod(None, job=never, stop_requested=False, now=NOW) is None


def test_the_grace_is_counted_from_the_condition_then_the_pods_creation() -> None:
    no_since = _scheduled_false("")
    pod = _pod({"phase": "Pending", "conditions": [no_since]})
    created = datetime.datetime.fromisoformat("2026-12-06T11:00:00Z").timestamp()
    assert judge_pod(pod, job=_job(), stop_requested=False, now=created + 1) is None
    late = judge_pod(pod, job=_job(), stop_requested=False, now=created + UNSCHEDULABLE_GRACE_S + 1)
    assert late is not None and late.status == RunStatus.PENDING


def test_a_watched_pod_is_read_only_when_asked() -> None:
    loads: list[int] = []
    pod = _pod({"phase": "Running"})

    def load() -> dict[str, Any]:
        loads.append(1)
        return pod

    watched = WatchedPod(load)
    assert loads == []
    assert watched.raw() is pod and loads == [1]
