"""A watched job pod becomes the same ``V1Pod`` the client's own parsing makes, once."""

from __future__ import annotations

import datetime
import json

from kubernetes import client

from workers.inventory_watch import WatchedPod


def _pod() -> client.V1Pod:
    started = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="berth-main-r-0-0",
            uid="u1",
            labels={"berth.dev/job": "j1", "berth.dev/attempt": "2"},
            deletion_timestamp=started,
        ),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="berth.local/run:x")],
            node_name="kwok-a100-0",
        ),
        status=client.V1PodStatus(
            phase="Failed",
            pod_ip="10.244.0.7",
            container_statuses=[
                client.V1ContainerStatus(
                    name="main",
                    image="i",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        terminated=client.V1ContainerStateTerminated(
                            exit_code=3, reason="Error", started_at=started
                        )
                    ),
                )
            ],
        ),
    )


def test_a_watched_pod_reads_as_the_clients_own_parsing_and_only_once() -> None:
    api = client.ApiClient()
    raw = api.sanitize_for_serialization(_pod())  # the apiserver's JSON
    loads = []

    def load() -> dict[str, object]:
        loads.append(1)
        return dict(raw)

    watched = WatchedPod(load)
    assert loads == []  # nothing read until asked
    pod = watched.v1()
    assert pod == api.deserialize(json.dumps(raw), "V1Pod", "application/json")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert pod.metadata.deletion_timestamp == _pod().metadata.deletion_timestamp
    assert watched.v1() is pod and loads == [1]
