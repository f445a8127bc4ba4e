"""Berth with one namespace, a Role there and a GPU quota: namespace-only mode, on KWOK.

The module runs a stack of its own whose only credential is a ServiceAccount
bound to ``deploy/namespace-only/rbac.yaml`` in ``berth-team-e2e`` (built by
:func:`cli.local.team.ensure_team`, as ``berth local up`` builds ``berth-team``):
no node reads, no pods of other namespaces. The kube-scheduler places the pods
on the KWOK GPU nodes from their GPU node affinity. The apiserver's own
``apiserver_request_total`` counts the 403s it answered, so the tests can tell
that nothing repeats a forbidden call. The real node runs the same runs in
``tests/realnode/test_namespace_only.py``.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from cli.local.cluster import ClusterState
from cli.local.team import QUOTA_NAME, SERVICE_ACCOUNT, ensure_team, set_gpu_quota
from shared import kube
from shared.errors import KubeNotFound
from tests.polling import wait_until
from tests.stack import Stack, start_stack

pytestmark = pytest.mark.integration

NAMESPACE = "berth-team-e2e"
GPU_KEY = "requests.nvidia.com/gpu"
# Access is asked again this often here (default 5 min), so revoking the Role is
# seen within seconds; the forbidden-call bound below does not depend on it.
RECHECK_S = 3


@pytest.fixture(scope="module")
def team_stack(
    local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    k = kube_admin
    directory = tmp_path_factory.mktemp("team-stack")
    kubeconfig = ensure_team(
        k, admin_kubeconfig=Path(local_cluster.kubeconfig), directory=directory, namespace=NAMESPACE
    )
    wait_until(lambda: allowed(k, "create", "pods"), timeout=30, what="the team Role applies")
    counted(k, GPU_KEY, 2)
    stack = start_stack(
        local_cluster,
        directory,
        namespace=NAMESPACE,
        kubeconfig=kubeconfig,
        # NAMESPACE_READ_TTL_S: tests here edit the quota and LimitRanges and submit at
        # once, so the API reads them on every submission (tests/integration/
        # test_namespace_reads.py tests keeping reads a while).
        env={
            "BERTH_KUBE__ACCESS_RECHECK_S": str(RECHECK_S),
            "BERTH_KUBE__NAMESPACE_READ_TTL_S": "0",
        },
    )
    try:
        yield stack
    finally:
        stack.stop()
        k.call(k.core.delete_namespace, NAMESPACE)


def allowed(k: kube.Kube, verb: str, resource: str) -> bool:
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    attributes = {"verb": verb, "resource": resource, "group": "", "namespace": NAMESPACE}
    review = k.call(
        client.AuthorizationV1Api(k.api).create_subject_access_review,
        {"spec": {"user": user, "resourceAttributes": attributes}},
    )
    return bool(review.status.allowed)


def counted(k: kube.Kube, key: str, amount: int | None) -> None:
    """Wait until the quota controller counts the quota at ``amount`` (None: gone)."""

    def check() -> bool:
        try:
            quota = k.call(k.core.read_namespaced_resource_quota, QUOTA_NAME, NAMESPACE)
        except KubeNotFound:
            return amount is None
        hard = (quota.status.hard if quota.status else None) or {}
        return amount is not None and hard.get(key) == str(amount)

    wait_until(check, timeout=30, what=f"quota {QUOTA_NAME} counted at {amount}")


def post(stack: Stack, name: str, **conf: Any) -> None:
    body = {"type": "task", "name": name, "commands": ["train"], **conf}
    with stack.client() as c:
        r = c.post("/api/projects/main/runs", json={"configuration": body})
    assert r.status_code == 202, r.text


def get(stack: Stack, name: str) -> dict[str, Any]:
    with stack.client() as c:
        r = c.get(f"/api/projects/main/runs/{name}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def wait_run(stack: Stack, name: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = get(stack, name)
        return run if run["status"] in statuses else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name} {'/'.join(statuses)}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nrun: {get(stack, name)}\n{stack.logs()}") from None


def wait_reason(stack: Stack, name: str, words: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = get(stack, name)
        return run if words in run["reason"] else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name} waiting for {words!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nrun: {get(stack, name)}\n{stack.logs()}") from None


def stop(stack: Stack, *names: str) -> None:
    with stack.client() as c:
        for name in names:
            c.post(f"/api/projects/main/runs/{name}/stop", json={"abort": True})
    for name in names:
        wait_run(stack, name, "terminated", "done", "failed")


def forbidden(state: ClusterState, *, resource: str, scope: str) -> int:
    """403 answers the apiserver gave for ``resource`` at ``scope``, any verb, since it started."""
    return refusals(state, scope=scope).get(resource, 0)


def refusals(state: ClusterState, *, scope: str) -> dict[str, int]:
    """Resource -> 403 answers the apiserver gave at ``scope``, any verb, since it started."""
    with httpx.Client(verify=ssl.create_default_context(cafile=state.ca_file), timeout=10.0) as c:
        r = c.get(
            f"{state.apiserver_url}/metrics",
            headers={"Authorization": f"Bearer {state.admin_token}"},
        )
    r.raise_for_status()
    totals: dict[str, int] = {}
    for line in r.text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if (labels.get("code"), labels.get("scope")) == ("403", scope):
            resource = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            totals[resource] = totals.get(resource, 0) + int(float(line.rsplit(" ", 1)[1]))
    return totals


def holds(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    """Poll ``check`` for ``seconds``; fail the test the first time it is false."""

    def broken() -> bool:
        if not check():
            raise AssertionError(f"no longer true: {what}")
        return time.monotonic() > end

    end = time.monotonic() + seconds
    wait_until(broken, timeout=seconds + 30, what=what)


def status_of(stack: Stack) -> dict[str, Any]:
    with stack.client() as c:
        r = c.get("/api/status")
    assert r.status_code == 200, r.text
    [backend] = [b for b in r.json()["backends"] if b["project"] == "main"]
    data: dict[str, Any] = backend
    return data


def test_berth_finds_it_may_only_use_its_namespace_and_says_why(team_stack: Stack) -> None:
    backend = wait_until(
        lambda: (b := status_of(team_stack))["mode"] == "namespace" and b,
        timeout=30,
        what="namespace-only mode in berth status",
    )
    assert backend["reason"].startswith("may not list nodes at the cluster scope")
    result = team_stack.cli("status")
    assert "namespace mode: may not list nodes" in result.stdout, result.stdout + result.stderr


def test_offer_says_node_offers_are_unknown_and_shows_what_the_quota_allows(
    team_stack: Stack,
) -> None:
    result = team_stack.cli("offer", "--gpu", "A100:1")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "node offers are unknown" in text
    assert "namespace-only mode" in text
    assert "quota team-gpus: 0 of 2 nvidia.com/gpu in use" in text


def test_a_task_runs_where_the_kube_scheduler_finds_its_gpu_by_label(
    team_stack: Stack, kube_admin: kube.Kube
) -> None:
    post(team_stack, "ns-task", resources={"gpu": "A10:1"})
    run = wait_run(team_stack, "ns-task", "running")
    [job] = run["jobs"]
    # The only A10 nodes are the "a10" pool's, named by GPU Feature Discovery's label.
    node = kube_admin.call(kube_admin.core.read_node, job["node"])
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A10"
    stop(team_stack, "ns-task")


def test_instance_types_become_node_affinity_the_kube_scheduler_honours(
    team_stack: Stack, kube_admin: kube.Kube
) -> None:
    """Any GPU, but only a p3.2xlarge: the one node whose well-known instance-type label
    says so (its GPU is named by that label too, ``cli/local/nodes.py``)."""
    post(team_stack, "ns-where", resources={"gpu": 1}, instance_types=["p3.2xlarge"])
    run = wait_run(team_stack, "ns-where", "running")
    [job] = run["jobs"]
    node = kube_admin.call(kube_admin.core.read_node, job["node"])
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "p3.2xlarge"
    pod = kube_admin.call(kube_admin.core.read_namespaced_pod, job["pod_name"], NAMESPACE)
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for term in terms.node_selector_terms:
        assert ("node.kubernetes.io/instance-type", "In", ["p3.2xlarge"]) in [
            (e.key, e.operator, e.values) for e in term.match_expressions
        ]
    stop(team_stack, "ns-where")


def test_backends_become_node_group_labels_and_a_cloud_without_one_is_refused(
    team_stack: Stack, kube_admin: kube.Kube
) -> None:
    """No node can be read here, so ``gcp`` is GKE's node pool label (which only
    ``kwok-gke-t4-0`` has), and ``crusoe``, which no label names, is refused at once."""
    post(team_stack, "ns-gcp", resources={"gpu": 1}, backends=["gcp"])
    run = wait_run(team_stack, "ns-gcp", "running")
    assert [j["node"] for j in run["jobs"]] == ["kwok-gke-t4-0"]
    stop(team_stack, "ns-gcp")
    body = {"type": "task", "name": "ns-crusoe", "commands": ["x"], "backends": ["crusoe"]}
    with team_stack.client() as c:
        r = c.post("/api/projects/main/runs", json={"configuration": body})
        assert r.status_code == 422, r.text
        assert "crusoe can be told apart only by the nodes' providerID" in r.text
        assert c.get("/api/projects/main/runs/ns-crusoe").status_code == 404  # nothing stored


def test_a_two_node_task_gets_two_distinct_nodes(team_stack: Stack) -> None:
    post(team_stack, "ns-pair", nodes=2, resources={"gpu": "A100:1"})
    run = wait_run(team_stack, "ns-pair", "running")
    nodes = {j["node"] for j in run["jobs"]}
    assert len(nodes) == 2 and all("a100" in n for n in nodes), run["jobs"]
    stop(team_stack, "ns-pair")


def test_a_service_and_a_dev_environment_run_without_gpus(team_stack: Stack) -> None:
    cpu = {"gpu": 0, "cpu": "1..", "memory": "1GB.."}
    post(team_stack, "ns-svc", type="service", port=8000, resources=cpu)
    body = {"type": "dev-environment", "name": "ns-ide", "ide": "vscode", "resources": cpu}
    with team_stack.client() as c:
        r = c.post("/api/projects/main/runs", json={"configuration": body})
    assert r.status_code == 202, r.text
    wait_run(team_stack, "ns-svc", "running")
    wait_run(team_stack, "ns-ide", "running")
    stop(team_stack, "ns-svc", "ns-ide")


def test_a_pod_the_scheduler_cannot_place_waits_with_its_message_and_does_not_fail(
    team_stack: Stack,
) -> None:
    """No KWOK node has an L40S: the pod stays pending, saying so, past the minute after
    which an unschedulable pod Berth placed itself would go back to the queue."""
    post(team_stack, "ns-nowhere", resources={"gpu": "L40S:1"})
    run = wait_reason(team_stack, "ns-nowhere", "waiting for the kube-scheduler: 0/")
    assert run["status"] == "provisioning"
    assert "node affinity" in run["reason"] or "nodes are available" in run["reason"]
    result = team_stack.cli("ps", env={"COLUMNS": "400"})
    assert "waiting for the kube-scheduler: 0/" in result.stdout, result.stdout
    # Past the 60 s unschedulable grace (workers/pod_status.py), it still waits.
    holds(
        lambda: get(team_stack, "ns-nowhere")["status"] == "provisioning",
        seconds=max(0.0, run["submitted_at"] + 75 - time.time()),
        what="ns-nowhere waits for the kube-scheduler",
    )
    stop(team_stack, "ns-nowhere")


def test_the_quota_admits_two_then_raised_lowered_and_deleted(
    team_stack: Stack, kube_admin: kube.Kube
) -> None:
    k = kube_admin
    for name in ("q1", "q2", "q3"):
        post(team_stack, name, resources={"gpu": "A100:1"})
    wait_run(team_stack, "q1", "running")
    wait_run(team_stack, "q2", "running")
    waiting = wait_reason(team_stack, "q3", "namespace quota team-gpus: 2 of 2 nvidia.com/gpu")
    assert waiting["status"] == "pending"
    # Raised while q3 waits: it starts in a following pass.
    set_gpu_quota(k, NAMESPACE, 3)
    counted(k, GPU_KEY, 3)
    wait_run(team_stack, "q3", "running")
    # Lowered below what runs: nothing running is touched, a new run waits.
    set_gpu_quota(k, NAMESPACE, 1)
    counted(k, GPU_KEY, 1)
    post(team_stack, "q4", resources={"gpu": "A100:1"})
    wait_reason(team_stack, "q4", "namespace quota team-gpus")
    assert [get(team_stack, n)["status"] for n in ("q1", "q2", "q3")] == ["running"] * 3
    # Deleted: nothing limits the namespace any more.
    k.call(k.core.delete_namespaced_resource_quota, QUOTA_NAME, NAMESPACE)
    counted(k, GPU_KEY, None)
    wait_run(team_stack, "q4", "running")
    stop(team_stack, "q1", "q2", "q3", "q4")
    set_gpu_quota(k, NAMESPACE, 2)
    counted(k, GPU_KEY, 2)


def test_a_run_past_the_quota_hard_limit_fails_at_submission_naming_it(
    team_stack: Stack,
) -> None:
    body = {"type": "task", "name": "too-big", "commands": ["x"], "resources": {"gpu": "A100:3"}}
    with team_stack.client() as c:
        r = c.post("/api/projects/main/runs", json={"configuration": body})
    assert r.status_code == 422, r.text
    assert "namespace quota team-gpus allows at most 2 nvidia.com/gpu" in r.text


def test_the_plan_says_the_mode_and_what_the_quota_allows(team_stack: Stack) -> None:
    body = {"type": "task", "commands": ["x"], "resources": {"gpu": "A100:1"}}
    with team_stack.client() as c:
        r = c.post("/api/projects/main/runs/plan", json={"configuration": body})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["access_mode"] == "namespace"
    assert plan["access_reason"].startswith("may not list nodes")
    assert plan["offers"] == [] and plan["possible"] is True
    assert plan["quota"] == ["team-gpus: 0 of 2 nvidia.com/gpu in use"]


def test_a_run_past_a_limit_range_max_fails_at_submission_naming_it(
    team_stack: Stack, kube_admin: kube.Kube
) -> None:
    k = kube_admin
    limits = {"type": "Container", "max": {"cpu": "2"}}
    k.call(
        k.core.create_namespaced_limit_range,
        NAMESPACE,
        {"metadata": {"name": "team-limits"}, "spec": {"limits": [limits]}},
    )
    try:
        body = {"type": "task", "name": "wide", "commands": ["x"], "resources": {"cpu": "4.."}}
        with team_stack.client() as c:
            r = c.post("/api/projects/main/runs", json={"configuration": body})
        assert r.status_code == 422, r.text
        assert "LimitRange team-limits allows at most 2 cpu per container" in r.text
    finally:
        k.call(k.core.delete_namespaced_limit_range, "team-limits", NAMESPACE)


def test_the_proxy_worker_never_asks_for_nodes_and_pods_it_may_not_read(
    team_stack: Stack, local_cluster: ClusterState
) -> None:
    """Namespace-only mode makes no cluster-wide read at all: over half a minute of a
    running stack (the old watch retried every few seconds) the apiserver refused none."""
    before = [forbidden(local_cluster, resource=r, scope="cluster") for r in ("nodes", "pods")]
    post(team_stack, "watched", resources={"gpu": "A100:1"})
    wait_run(team_stack, "watched", "running")
    holds(
        lambda: (
            [forbidden(local_cluster, resource=r, scope="cluster") for r in ("nodes", "pods")]
            == before
        ),
        seconds=30,
        what="no forbidden cluster-wide read",
    )
    stop(team_stack, "watched")


def test_a_revoked_role_is_a_clear_status_and_no_loop_then_granted_again(
    team_stack: Stack, kube_admin: kube.Kube, local_cluster: ClusterState
) -> None:
    k = kube_admin
    post(team_stack, "before-revoke", resources={"gpu": "A100:1"})
    wait_run(team_stack, "before-revoke", "running")
    binding = k.call(k.rbac.read_namespaced_role_binding, "berth", NAMESPACE)
    k.call(k.rbac.delete_namespaced_role_binding, "berth", NAMESPACE)
    try:
        wait_until(lambda: not allowed(k, "create", "pods"), timeout=30, what="RBAC revoked")
        backend = wait_until(
            lambda: (b := status_of(team_stack))["mode"] == "none" and b,
            timeout=30,
            what="berth status: no access",
        )
        assert "may not create pods in namespace berth-team-e2e" in backend["reason"]
        post(team_stack, "during-revoke", resources={"gpu": "A100:1"})
        wait_reason(team_stack, "during-revoke", "waiting for access to the cluster: may not")
        # Active runs keep their state; nothing (syncs, the pod watch, the jump host)
        # asks again for what it was refused, at most once in the window per resource.
        before = refusals(local_cluster, scope="namespace")

        def calm() -> bool:
            now = refusals(local_cluster, scope="namespace")
            again = {r: n - before.get(r, 0) for r, n in now.items() if n - before.get(r, 0) > 1}
            assert not again, f"forbidden calls repeated within 20 s: {again}"
            return bool(get(team_stack, "before-revoke")["status"] == "running")

        holds(calm, seconds=20, what="no repeated forbidden call, the running run left alone")
        reason = get(team_stack, "before-revoke")["reason"]
        assert reason.startswith("cluster access lost: may not create pods"), reason
    finally:
        binding.metadata = {"name": "berth", "namespace": NAMESPACE}
        k.call(k.rbac.create_namespaced_role_binding, NAMESPACE, binding)
    wait_until(lambda: allowed(k, "create", "pods"), timeout=30, what="RBAC granted again")
    wait_run(team_stack, "during-revoke", "running", timeout=90)
    wait_until(
        lambda: get(team_stack, "before-revoke")["reason"] == "",
        timeout=30,
        what="the lost-access reason cleared",
    )
    stop(team_stack, "before-revoke", "during-revoke")
