"""End to end on the local cluster: node groups, replica groups and per-node volumes reach pods."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shared import kube
from tests.e2e.test_volumes import PvFactory, make_pv  # noqa: F401 (a fixture)
from tests.polling import wait_until
from tests.stack import Stack
from workers.podspec import LABEL_GROUP

pytestmark = pytest.mark.integration


def _apply(stack: Stack, tmp_path: Path, yaml_text: str) -> None:
    path = tmp_path / f"{secrets.token_hex(3)}.dstack.yml"
    path.write_text(textwrap.dedent(yaml_text))
    result = stack.cli("apply", "-f", str(path), "-y", "-d")
    assert result.returncode == 0, result.stderr + result.stdout + stack.logs()


def _run(stack: Stack, name: str) -> dict[str, Any]:
    with stack.client() as c:
        data: dict[str, Any] = c.get(f"/api/projects/main/runs/{name}").json()
    return data


def _pods(k: kube.Kube, stack: Stack, run: str) -> list[Any]:
    items = k.call(
        k.core.list_namespaced_pod, stack.namespace, label_selector=f"{kube.LABEL_RUN}={run}"
    ).items
    return sorted(items, key=lambda p: int(p.metadata.labels["berth.dev/rank"]))


def _wait_running(stack: Stack, name: str) -> None:
    try:
        wait_until(lambda: _run(stack, name)["status"] == "running", timeout=90, what=name)
    except AssertionError as e:
        raise AssertionError(f"{e}\nrun: {_run(stack, name)}\n{stack.logs()}") from None


def _stop(stack: Stack, k: kube.Kube, name: str) -> None:
    assert stack.cli("stop", name, "--abort").returncode == 0
    wait_until(lambda: not _pods(k, stack, name), timeout=60, what=f"{name}'s pods gone")


def test_a_task_with_node_groups_runs_each_groups_commands_on_its_own_nodes(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: task
        name: ray-groups
        image: rayproject/ray
        groups:
          - name: head
            commands: [ray start --head --port=6379 --block]
            ports: [8265]
            resources: {gpu: H100:1}
          - name: workers
            nodes: 2
            commands: ['ray start --address=${{ groups[0].nodes[0].IP_ADDRESS }}:6379 --block']
            resources: {gpu: H100:1}
        """,
    )
    _wait_running(stack, "ray-groups")  # one gang: all three placed and running
    pods = _pods(kube_admin, stack, "ray-groups")
    assert [p.metadata.labels[LABEL_GROUP] for p in pods] == ["head", "workers", "workers"]
    assert len({p.spec.node_name for p in pods}) == 3  # a node each
    head, *workers = (p.spec.containers[0] for p in pods)
    assert "ray start --head" in head.command[-1]
    assert [p.container_port for p in head.ports] == [8265]
    for worker in workers:
        assert "ray start --address=${BERTH_NODE_0_IP}:6379" in worker.command[-1]
        assert "ray start --head" not in worker.command[-1]
        assert not worker.ports
        env = {e.name: e.value for e in worker.env}
        assert (env["DSTACK_NODES_NUM"], env["DSTACK_GPUS_NUM"]) == ("3", "3")
    assert pods[0].spec.subdomain == pods[1].spec.subdomain  # peers resolve by DNS
    _stop(stack, kube_admin, "ray-groups")


def test_replicas_of_a_services_groups_run_their_own_commands_and_image(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: service
        name: pd-groups
        port: 8000
        replicas:
          - name: router
            count: 1
            image: smg:1
            commands: [smg launch --port 8000]
            resources: {gpu: H100:1}
          - name: prefill
            count: 2..4
            scaling: {metric: rps, target: 3}
            commands: [python -m sglang.launch_server --port 8000]
            resources: {gpu: H100:1}
        """,
    )
    _wait_running(stack, "pd-groups")
    wait_until(lambda: len(_pods(kube_admin, stack, "pd-groups")) == 3, timeout=60, what="pods")
    pods = sorted(
        _pods(kube_admin, stack, "pd-groups"),
        key=lambda p: int(p.metadata.labels["berth.dev/replica"]),
    )
    assert [p.metadata.labels[LABEL_GROUP] for p in pods] == ["router", "prefill", "prefill"]
    router, *prefill = (p.spec.containers[0] for p in pods)
    assert router.image == "smg:1" and "smg launch" in router.command[-1]
    for container in prefill:
        assert container.image != "smg:1"
        assert "sglang.launch_server" in container.command[-1]
    run = _run(stack, "pd-groups")
    assert sorted(j["replica_num"] for j in run["jobs"]) == [0, 1, 2]
    _stop(stack, kube_admin, "pd-groups")


def test_each_node_of_a_task_mounts_its_own_node_rank_volume(
    stack: Stack,
    kube_admin: kube.Kube,
    tmp_path: Path,
    make_pv: PvFactory,  # noqa: F811
) -> None:
    suffix = secrets.token_hex(3)
    storage_class = f"e2e-{suffix}"  # the claims bind to these, so the pods can run
    for rank in range(2):
        make_pv(storage_class, size="2Gi")
        path = tmp_path / f"vol-{rank}.dstack.yml"
        path.write_text(
            f"type: volume\nname: data-{suffix}-{rank}\nbackend: kubernetes\nsize: 1GB\n"
            f"storage_class_name: {storage_class}\n"
        )
        applied = stack.cli("volume", "apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr + stack.logs()
    missing = tmp_path / "missing.dstack.yml"
    missing.write_text(
        "type: task\nname: per-node-3\nnodes: 3\ncommands: [train]\n"
        f"volumes: ['data-{suffix}-${{{{ dstack.node_rank }}}}:/data']\n"
    )
    refused = stack.cli("apply", "-f", str(missing), "-y", "-d")
    assert refused.returncode != 0
    assert f"no volume named 'data-{suffix}-2'" in refused.stderr + refused.stdout

    _apply(
        stack,
        tmp_path,
        f"""
        type: task
        name: per-node
        nodes: 2
        commands: [train]
        resources: {{gpu: H100:1}}
        volumes:
          - name: data-{suffix}-${{{{ dstack.node_rank }}}}
            path: /data
        """,
    )
    _wait_running(stack, "per-node")
    claims = [
        [v.persistent_volume_claim.claim_name for v in p.spec.volumes if v.persistent_volume_claim]
        for p in _pods(kube_admin, stack, "per-node")
    ]
    assert claims == [[f"berth-main-vol-data-{suffix}-0"], [f"berth-main-vol-data-{suffix}-1"]]
    _stop(stack, kube_admin, "per-node")
    for rank in range(2):
        assert stack.cli("volume", "delete", f"data-{suffix}-{rank}").returncode == 0
