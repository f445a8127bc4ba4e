"""The collector's view of job pods, from objects as the Kubernetes client gives them."""

from __future__ import annotations

from kubernetes import client

from shared import kube
from workers.collector.pods import _bookmark_version, pod_view


def _pod(
    labels: dict[str, str], state: client.V1ContainerState | None, phase: str = "Running"
) -> client.V1Pod:
    statuses = (
        [
            client.V1ContainerStatus(
                name="main", image="i", image_id="", ready=False, restart_count=0, state=state
            )
        ]
        if state
        else None
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", uid="u", labels=labels),
        status=client.V1PodStatus(container_statuses=statuses, phase=phase),
    )


JOB = {kube.LABEL_JOB: "job-1", kube.LABEL_ATTEMPT: "2"}


def test_a_job_pod_is_followed_once_its_container_started_and_ended_after() -> None:
    waiting = pod_view(_pod(JOB, client.V1ContainerState(waiting=client.V1ContainerStateWaiting())))
    running = pod_view(_pod(JOB, client.V1ContainerState(running=client.V1ContainerStateRunning())))
    ended = pod_view(
        _pod(
            JOB, client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=0))
        )
    )
    assert waiting is not None and (waiting.started, waiting.ended) == (False, False)
    assert running is not None and (running.started, running.ended) == (True, False)
    assert ended is not None and (ended.started, ended.ended) == (True, True)
    assert (ended.job_id, ended.attempt) == ("job-1", 2)


def test_a_finished_pod_has_ended_whatever_its_container_state_still_says() -> None:
    # KWOK (and a status update racing the phase) can leave the container "running"
    # in a Succeeded pod: its output is complete all the same.
    running = client.V1ContainerState(running=client.V1ContainerStateRunning())
    for phase in ("Succeeded", "Failed"):
        view = pod_view(_pod(JOB, running, phase))
        assert view is not None and (view.started, view.ended) == (True, True)


def test_pods_without_a_job_label_are_not_followed_and_a_bad_attempt_reads_as_first() -> None:
    assert pod_view(_pod({}, None)) is None
    odd = pod_view(_pod({kube.LABEL_JOB: "j", kube.LABEL_ATTEMPT: "x"}, None))
    assert odd is not None and odd.attempt == 1


def test_a_bookmark_left_as_a_plain_dict_still_moves_the_watch_on() -> None:
    # kubernetes.watch does not deserialize BOOKMARK objects into V1Pod: a dict arrives.
    assert _bookmark_version({"kind": "Pod", "metadata": {"resourceVersion": "42"}}) == "42"
    assert _bookmark_version(_pod(JOB, None)) is None


def test_the_watchs_json_reads_as_the_client_object_does() -> None:
    # The watch hands the collector the apiserver's JSON; tests build client objects.
    api = client.ApiClient()
    for state in (
        None,
        client.V1ContainerState(waiting=client.V1ContainerStateWaiting()),
        client.V1ContainerState(running=client.V1ContainerStateRunning()),
        client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=3)),
    ):
        for phase in ("Pending", "Running", "Failed"):
            pod = _pod(JOB, state, phase)
            raw = api.sanitize_for_serialization(pod)
            assert isinstance(raw["metadata"]["labels"], dict)  # camelCase JSON, not the object
            assert pod_view(raw) == pod_view(pod) is not None


def test_an_ended_container_says_how_many_lines_it_printed_in_its_termination_message() -> None:
    def ended(message: str | None) -> client.V1ContainerState:
        term = client.V1ContainerStateTerminated(exit_code=0, message=message)
        return client.V1ContainerState(terminated=term)

    counted = pod_view(_pod(JOB, ended("berth-output-lines 200000\n")))
    assert counted is not None and counted.printed == 200_000
    for message in (None, "", "a job's own message"):
        view = pod_view(_pod(JOB, ended(message)))
        assert view is not None and view.ended and view.printed is None
    running = pod_view(_pod(JOB, client.V1ContainerState(running=client.V1ContainerStateRunning())))
    assert running is not None and running.printed is None
