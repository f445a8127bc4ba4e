"""End to end: the CLI and API against the real stack and the local cluster."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cli.local.processes import stop_process
from shared import kube
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration


def _apply(stack: Stack, tmp_path: Path, yaml_text: str) -> dict[str, Any]:
    path = tmp_path / "run.dstack.yml"
    path.write_text(textwrap.dedent(yaml_text))
    result = stack.cli("apply", "-f", str(path), "-y", "-d")
    assert result.returncode == 0, result.stderr + result.stdout + stack.logs()
    name = result.stdout.split("submitted ", 1)[1].split()[0]
    return _run(stack, name)


def _run(stack: Stack, name: str) -> dict[str, Any]:
    with stack.client() as c:
        r = c.get(f"/api/projects/main/runs/{name}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _wait_status(stack: Stack, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = _run(stack, name)
        return run if run["status"] == status else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name} {status}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nrun: {_run(stack, name)}\n{stack.logs()}") from None


def _pods(k: kube.Kube, stack: Stack, run: str) -> list[Any]:
    items = k.call(
        k.core.list_namespaced_pod, stack.namespace, label_selector=f"{kube.LABEL_RUN}={run}"
    ).items
    return sorted(items, key=lambda p: p.metadata.name)


def _env(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env}


def test_a_one_gpu_task_runs_and_finishes(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    run = _apply(
        stack,
        tmp_path,
        """
        type: task
        name: one-gpu
        commands: [python train.py]
        resources: {gpu: H100:1}
        env: {KWOK_RUN_FOR: 2s}
        """,
    )
    assert run["status"] in ("submitted", "pending", "provisioning", "running")

    _wait_status(stack, "one-gpu", "running")
    pods = _pods(kube_admin, stack, "one-gpu")
    assert len(pods) == 1
    pod = pods[0]
    limits = pod.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "1"
    assert pod.spec.node_name.startswith("kwok-h100-")
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.automount_service_account_token is False
    assert _env(pod)["DSTACK_RUN_NAME"] == "one-gpu"
    assert _env(pod)["DSTACK_GPUS_NUM"] == "1"
    assert pod.spec.containers[0].command[-1].startswith("set -e\n")

    done = _wait_status(stack, "one-gpu", "done")
    assert done["jobs"][0]["exit_code"] == 0
    with stack.client() as c:
        events = c.get("/api/projects/main/runs/one-gpu/events").json()
    statuses = [e["status"] for e in events if e["kind"] == "status"]
    assert statuses[0] == "submitted"
    assert "running" in statuses
    assert statuses[-1] == "done"


def test_a_finished_runs_name_applied_again_replaces_its_kept_pod_and_runs(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    conf = """
        type: task
        name: reused
        commands: [python train.py]
        env: {KWOK_RUN_FOR: 1s}
        """
    first = _apply(stack, tmp_path, conf)
    _wait_status(stack, "reused", "done")
    kept = _pods(kube_admin, stack, "reused")
    assert [p.metadata.labels[kube.LABEL_RUN] for p in kept] == ["reused"]  # kept for its output
    second = _apply(stack, tmp_path, conf)
    assert second["id"] != first["id"]
    done = _wait_status(stack, "reused", "done")
    assert done["id"] == second["id"]
    assert done["jobs"][0]["exit_code"] == 0
    pods = _pods(kube_admin, stack, "reused")
    assert len(pods) == 1
    assert pods[0].metadata.uid != kept[0].metadata.uid


def test_a_pod_berth_did_not_create_holding_a_jobs_name_fails_the_run_naming_it(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    k = kube_admin
    squatter = {
        "metadata": {"name": "berth-main-squatted-0-0", "labels": {"app": "someone-else"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "nowhere"},
    }
    k.call(k.core.create_namespaced_pod, stack.namespace, squatter)
    try:
        _apply(
            stack,
            tmp_path,
            """
            type: task
            name: squatted
            commands: [python train.py]
            env: {KWOK_RUN_FOR: 1s}
            """,
        )
        failed = _wait_status(stack, "squatted", "failed")
        assert "pod berth-main-squatted-0-0 exists but was not created by Berth" in failed["reason"]
        left = k.call(k.core.read_namespaced_pod, "berth-main-squatted-0-0", stack.namespace)
        assert left.metadata.labels == {"app": "someone-else"}  # never deleted
    finally:
        k.call(
            k.core.delete_namespaced_pod,
            "berth-main-squatted-0-0",
            stack.namespace,
            grace_period_seconds=0,
        )


def test_a_jobs_state_follows_its_pod_through_the_proxy_worker_with_no_celery_worker(
    stack: Stack, tmp_path: Path
) -> None:
    # The proxy worker's pod watch applies each pod state to its job: with every Celery
    # worker stopped once the pod exists, the run still reaches running and then done.
    _apply(
        stack,
        tmp_path,
        """
        type: task
        name: followed
        commands: [python train.py]
        env: {KWOK_RUN_FOR: 3s}
        """,
    )
    wait_until(lambda: _run(stack, "followed")["jobs"][0]["pod_name"], timeout=60, what="its pod")
    workers = [p for p in stack.processes if p.name.startswith("worker-")]
    for record in workers:
        stop_process(record)
    try:
        done = _wait_status(stack, "followed", "done")
        assert done["jobs"][0]["exit_code"] == 0
    finally:
        for record in workers:
            ready = _readies(record.log)
            new = stack.restart(record.name)
            wait_until(
                lambda log=new.log, n=ready: _readies(log) > n,  # type: ignore[misc]
                timeout=60,
                what="the worker back",
            )


def _readies(log: str) -> int:
    """How often a worker logging to ``log`` has said it is ready (restarts append)."""
    return Path(log).read_text(errors="replace").count("ready.")


def test_a_failing_command_fails_the_run_with_its_exit_code(stack: Stack, tmp_path: Path) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: task
        name: exits-3
        commands: [exit 3]
        env: {KWOK_RUN_FOR: 1s, KWOK_EXIT_CODE: "3"}
        """,
    )
    failed = _wait_status(stack, "exits-3", "failed")
    assert failed["jobs"][0]["exit_code"] == 3
    assert "exit code 3" in failed["reason"]


def test_a_two_node_task_gets_ranks_and_the_master_ip(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: task
        name: two-nodes
        nodes: 2
        commands: [torchrun train.py]
        resources: {gpu: H100:8}
        """,
    )
    _wait_status(stack, "two-nodes", "running")
    pods = _pods(kube_admin, stack, "two-nodes")
    assert len(pods) == 2
    by_rank = {_env(p)["DSTACK_NODE_RANK"]: p for p in pods}
    assert set(by_rank) == {"0", "1"}
    master_ip = by_rank["0"].status.pod_ip
    assert master_ip
    for pod in pods:
        env = _env(pod)
        assert env["DSTACK_MASTER_NODE_IP"] == master_ip or env["DSTACK_NODE_RANK"] == "0"
        assert env["DSTACK_NODES_NUM"] == "2"
        assert env["DSTACK_GPUS_PER_NODE"] == "8"
        assert env["DSTACK_GPUS_NUM"] == "16"
        assert pod.spec.subdomain
    assert by_rank["0"].spec.node_name != by_rank["1"].spec.node_name
    assert _env(by_rank["1"])["DSTACK_MASTER_NODE_IP"] == master_ip
    svc = kube_admin.call(
        kube_admin.core.read_namespaced_service, by_rank["0"].spec.subdomain, stack.namespace
    )
    assert svc.spec.cluster_ip == "None"

    stopped = stack.cli("stop", "two-nodes")
    assert stopped.returncode == 0, stopped.stderr
    _wait_status(stack, "two-nodes", "terminated")
    wait_until(lambda: not _pods(kube_admin, stack, "two-nodes"), timeout=30, what="pods gone")


def test_a_dev_environment_runs_with_the_users_key(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKeyBerthTestKeyBerthTestKey0 me@laptop"
    with stack.client() as c:
        assert c.put("/api/users/me/ssh-key", json={"public_key": key}).status_code == 204
    _apply(
        stack,
        tmp_path,
        """
        type: dev-environment
        name: my-ide
        ide: vscode
        resources: {gpu: A10:1}
        """,
    )
    running = _wait_status(stack, "my-ide", "running")
    assert running["ssh_target"] == "my-ide"
    assert running["ide_url"] == "vscode://vscode-remote/ssh-remote+my-ide/workflow"
    pod = _pods(kube_admin, stack, "my-ide")[0]
    # The keys come from the project's SSH Secret for this key set (workers/ssh_secret.py).
    (mounted,) = [v.secret.secret_name for v in pod.spec.volumes if v.name == "berth"]
    assert mounted.startswith("berth-ssh-")
    secret = kube_admin.call(kube_admin.core.read_namespaced_secret, mounted, stack.namespace)
    import base64

    assert key in base64.b64decode(secret.data["authorized_keys"]).decode()
    assert secret.immutable is True
    assert "sshd" in pod.spec.containers[0].command[-1]
    assert any(p.container_port == 10022 for p in pod.spec.containers[0].ports)
    assert stack.cli("stop", "my-ide", "--abort").returncode == 0
    _wait_status(stack, "my-ide", "terminated")


def test_a_two_replica_service_gets_two_pods_and_a_service(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: service
        name: llm
        port: 8000
        replicas: 2
        commands: [python -m http.server 8000]
        resources: {gpu: 24GB..}
        """,
    )
    _wait_status(stack, "llm", "running")
    pods = _pods(kube_admin, stack, "llm")
    assert len(pods) == 2
    svc = kube_admin.call(
        kube_admin.core.read_namespaced_service, "berth-main-llm", stack.namespace
    )
    assert svc.spec.ports[0].port == 8000
    assert stack.cli("stop", "llm").returncode == 0
    _wait_status(stack, "llm", "terminated")
    wait_until(lambda: not _pods(kube_admin, stack, "llm"), timeout=30, what="pods gone")


def test_more_gpus_than_any_node_has_fails_fast_as_impossible(stack: Stack, tmp_path: Path) -> None:
    _apply(
        stack,
        tmp_path,
        """
        type: task
        name: too-big
        commands: [echo]
        resources: {gpu: H100:16}
        """,
    )
    failed = _wait_status(stack, "too-big", "failed", timeout=20)
    assert "impossible" in failed["reason"]


def test_bad_yaml_gets_a_clear_error_and_creates_nothing(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("type: task\ncommands: [echo\nresources: {gpu: A100:banana}\n")
    result = stack.cli("apply", "-f", str(path), "-y", "-d")
    assert result.returncode == 1
    assert "line" in result.stderr and "column" in result.stderr
    path.write_text("type: task\ncommands: [echo]\nresources: {gpu: 'A100:banana'}\n")
    result = stack.cli("apply", "-f", str(path), "-y", "-d")
    assert result.returncode == 1
    assert "resources.gpu" in result.stderr
    listing = stack.cli("ps", "-a", "--json")
    assert not [r for r in json.loads(listing.stdout) if "banana" in json.dumps(r)]


def test_a_wrong_token_gets_401(stack: Stack) -> None:
    with stack.client(token="not-a-token") as c:
        r = c.get("/api/projects/main/runs")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_another_projects_run_is_404(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as c:
        created = c.post("/api/users", json={"name": "outsider", "projects": ["other"]})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert (
            c.post(
                "/api/projects/main/runs",
                json={"configuration": {"type": "task", "name": "private", "commands": ["echo"]}},
            ).status_code
            == 202
        )
    with stack.client(token=token) as c:
        assert c.get("/api/projects/main/runs/private").status_code == 404
        assert c.get("/api/projects/other/runs").status_code == 200


def test_a_provision_task_delivered_twice_creates_one_pod(
    stack: Stack, kube_admin: kube.Kube
) -> None:
    """Both deliveries run the real provisioning code; the second adopts the first's pod."""
    from shared.state.records import Placement, RunStatus
    from workers import provisioning
    from workers.context import build_context

    ctx = build_context(stack.settings())
    try:
        with stack.client() as c:
            r = c.post(
                "/api/projects/main/runs",
                json={
                    "configuration": {
                        "type": "task",
                        "name": "twice",
                        "commands": ["sleep 1"],
                        "resources": {"gpu": "A100:9"},
                    }
                },
            )
        assert r.status_code == 202, r.text
        run = ctx.store.run_by_name("main", "twice")
        # A100:9 never fits, so the scheduler leaves the job to us: place it by hand.
        wait_until(lambda: ctx.store.get_run(run.id).status.is_finished, timeout=20, what="fail")
        job = ctx.store.get_job(run.job_ids[0])
        job.status = RunStatus.PROVISIONING
        job.placement = Placement(node="kwok-a100-1", gpu_resource="nvidia.com/gpu", gpus=1)
        ctx.store.r.hset(ctx.store.key("job", job.id), mapping={"v": 0, "d": job.model_dump_json()})
        run = ctx.store.get_run(run.id)
        run.status = RunStatus.PROVISIONING
        ctx.store.r.hset(ctx.store.key("run", run.id), mapping={"v": 0, "d": run.model_dump_json()})

        provisioning.provision_job(ctx, job.id)
        provisioning.provision_job(ctx, job.id)

        pods = _pods(kube_admin, stack, "twice")
        assert len(pods) == 1
        assert pods[0].metadata.labels[kube.LABEL_JOB] == job.id
        assert ctx.store.get_job(job.id).pod_name == pods[0].metadata.name
    finally:
        kube_admin.call(
            kube_admin.core.delete_collection_namespaced_pod,
            stack.namespace,
            label_selector=f"{kube.LABEL_RUN}=twice",
        )
        ctx.close()
