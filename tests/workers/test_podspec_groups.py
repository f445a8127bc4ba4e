"""Pods of groups: each job's pod runs its group's commands, ports and image, resolves
``${{ groups[i].nodes[j].IP_ADDRESS }}`` from its peers' DNS names, and mounts its
node's volume of a ``${{ dstack.node_rank }}`` name."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from shared.configuration import configuration_from_mapping
from shared.state.jobs import jobs_for
from shared.state.records import Job, Placement, Run
from tests.factories import run_of
from workers.podspec import LABEL_GROUP, ClaimMount, PodContext, build_job_objects

TASK = {
    "type": "task",
    "name": "ray",
    "image": "ray",
    "groups": [
        {"name": "head", "commands": ["echo head"], "ports": [8265]},
        {
            "name": "workers",
            "nodes": 2,
            "commands": ["echo joins ${{ groups[0].nodes[0].IP_ADDRESS }}:6379"],
        },
    ],
}


def _pods(data: dict[str, Any], **ctx: Any) -> list[dict[str, Any]]:
    run, conf = run_of(data)
    context = PodContext(default_image="berth.local/run:x", **ctx)
    pods = []
    for job in jobs_for(run, conf):
        placed = job.model_copy(update={"placement": Placement(node=f"n{job.job_num}")})
        pods.append(build_job_objects(run, placed, conf, context).pod)
    return pods


def _main(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def test_each_node_runs_its_groups_commands_and_ports_under_its_group_label() -> None:
    head, first, second = _pods(TASK)
    assert [p["metadata"]["labels"][LABEL_GROUP] for p in (head, first, second)] == [
        "head",
        "workers",
        "workers",
    ]
    assert "echo head" in _main(head)["command"][2]
    assert "echo joins" not in _main(head)["command"][2]
    assert [p["containerPort"] for p in _main(head)["ports"]] == [8265]
    assert _main(first)["ports"] == []
    assert "echo joins ${BERTH_NODE_0_IP}:6379" in _main(second)["command"][2]


def test_a_groups_node_ip_is_its_peers_address_resolved_before_the_commands_run() -> None:
    worker = _pods(TASK)[1]
    env = {e["name"]: e["value"] for e in _main(worker)["env"] if "value" in e}
    assert env["DSTACK_NODES_NUM"] == "3"
    # The pod's own script, in a real shell: peers resolve by name (here all localhost).
    env["BERTH_NODES_HOSTNAMES"] = "localhost\nlocalhost\nlocalhost"
    shell = _main(worker)["command"]
    done = subprocess.run(
        ["/bin/sh", "-c", shell[2]],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    address = line.removeprefix("joins ").removesuffix(":6379")
    assert address in ("127.0.0.1", "::1")


def test_a_single_node_task_reaches_itself_as_group_0_node_0() -> None:
    (pod,) = _pods(
        {"type": "task", "name": "one", "commands": ["echo ${{ groups[0].nodes[0].IP_ADDRESS }}"]}
    )
    env = {e["name"]: e["value"] for e in _main(pod)["env"] if "value" in e}
    assert env["BERTH_NODE_0_IP"] == "127.0.0.1"


def test_replicas_of_different_groups_get_their_own_commands_and_image() -> None:
    service = {
        "type": "service",
        "name": "pd",
        "port": 8000,
        "replicas": [
            {"name": "router", "count": 1, "commands": ["serve router"], "image": "smg"},
            {
                "name": "prefill",
                "count": "1..4",
                "scaling": {"metric": "rps", "target": 3},
                "commands": ["serve prefill"],
                "python": "3.12",
                "privileged": True,
            },
        ],
    }
    router, prefill = _pods(service)
    assert _main(router)["image"] == "smg"
    assert "serve router" in _main(router)["command"][2]
    assert "securityContext" not in _main(router)
    assert _main(prefill)["image"] == "berth.local/run:x"  # the default image, with python
    assert "serve prefill" in _main(prefill)["command"][2]
    assert _main(prefill)["securityContext"] == {"privileged": True}
    assert prefill["metadata"]["labels"][LABEL_GROUP] == "prefill"
    # Both are the service's replicas: the port the proxy reaches is the service's.
    assert [p["containerPort"] for p in _main(prefill)["ports"]] == [8000]


def test_each_node_mounts_its_own_volume_of_a_node_rank_name() -> None:
    task = {
        "type": "task",
        "name": "train",
        "nodes": 2,
        "commands": ["train"],
        "volumes": [{"name": "data-${{ dstack.node_rank }}", "path": "/data"}],
    }
    claims = {f"data-{r}": ClaimMount(claim=f"claim-data-{r}") for r in range(2)}
    pods = _pods(task, claims=claims)
    mounted = [
        [
            v["persistentVolumeClaim"]["claimName"]
            for v in p["spec"]["volumes"]
            if v["name"] == "vol-0"
        ]
        for p in pods
    ]
    assert mounted == [["claim-data-0"], ["claim-data-1"]]


def test_a_job_recorded_before_groups_existed_runs_the_configuration_as_it_is() -> None:
    conf = configuration_from_mapping({"type": "task", "name": "old", "commands": ["echo old"]})
    run = Run(
        id="r",
        project="main",
        name="old",
        user="u",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
    )
    job = Job(id="j", run_id="r", project="main", run_name="old", placement=Placement(node="n"))
    pod = build_job_objects(run, job, conf, PodContext(default_image="i")).pod
    assert LABEL_GROUP not in pod["metadata"]["labels"]
    assert "echo old" in _main(pod)["command"][2]
