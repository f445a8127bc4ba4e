"""Namespace-only mode on real kubelets: the kube-scheduler places, the runs really run.

Project ``main`` of a stack of its own uses only a ServiceAccount bound to
``deploy/namespace-only/rbac.yaml`` in ``berth-team-real`` (no node reads, no
other namespaces; :func:`cli.local.team.ensure_team`, as ``berth local up``
makes ``berth-team``) with a quota of two GPUs. Berth finds it may not read
nodes, leaves placement to the kube-scheduler with GPU node affinity, and the
pods run on the real nodes (``NVIDIA-L4`` by GPU Feature Discovery's label).
The stack makes no jump host, and the namespace is deleted at the end, so the
other modules' one-CPU pods keep the two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from cli.local.cluster import ClusterState
from cli.local.team import SERVICE_ACCOUNT, ensure_team
from shared import kube
from tests.polling import wait_until
from tests.realnode.conftest import real_backend, real_env
from tests.realnode.world import SMALL, START_S, apply, run, running, stop, wait_status
from tests.stack import Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

NAMESPACE = "berth-team-real"


@pytest.fixture(scope="module")
def team_stack(
    real_cluster: ClusterState, real_kube: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    k = real_kube
    directory = tmp_path_factory.mktemp("team-real")
    kubeconfig = ensure_team(
        k, admin_kubeconfig=Path(real_cluster.kubeconfig), directory=directory, namespace=NAMESPACE
    )
    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"

    def granted() -> bool:
        attributes = {"verb": "create", "resource": "pods", "namespace": NAMESPACE}
        review = k.call(
            client.AuthorizationV1Api(k.api).create_subject_access_review,
            {"spec": {"user": user, "resourceAttributes": attributes}},
        )
        return bool(review.status.allowed)

    wait_until(granted, timeout=30, what="the team Role applies")
    s = start_stack(
        real_cluster,
        directory,
        namespace=NAMESPACE,
        workers=1,
        kubeconfig=kubeconfig,
        backend=real_backend(real_cluster, jump_port=None),
        env=real_env(real_cluster),
    )
    try:
        yield s
    finally:
        s.stop()
        k.call(k.core.delete_namespace, NAMESPACE)

        def gone() -> bool:
            return not k.call(k.core.list_namespaced_pod, NAMESPACE).items

        wait_until(gone, timeout=120, what=f"the pods of {NAMESPACE} deleted")


def test_berth_runs_the_backend_in_namespace_only_mode(team_stack: Stack) -> None:
    result = team_stack.cli("status")
    assert "namespace mode: may not list nodes" in result.stdout, result.stdout + result.stderr


def test_a_task_asking_for_an_l4_runs_on_a_real_node_the_kube_scheduler_chose(
    team_stack: Stack, real_cluster: ClusterState, tmp_path: Path
) -> None:
    """The exit code proves where it ran: a GPU from the real node's device plugin, and
    its own pod's hostname (output goes through the log collector, tested elsewhere)."""
    name = apply(
        team_stack,
        tmp_path,
        f"""
        type: task
        name: ns-hello
        commands:
          - case "$NVIDIA_VISIBLE_DEVICES" in GPU-berth-real-*) ;; *) exit 7;; esac
          - test "$(hostname)" = berth-main-ns-hello-0-0 || exit 8
        {SMALL.replace("gpu: 1", "gpu: L4:1")}
        """,
    )
    done = wait_status(team_stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", (done, team_stack.logs())
    assert real_cluster.real_nodes is not None
    [job] = done["jobs"]
    assert job["node"] in real_cluster.real_nodes.names


def test_a_two_node_task_runs_on_both_real_nodes(
    team_stack: Stack, real_cluster: ClusterState, tmp_path: Path
) -> None:
    name = apply(
        team_stack,
        tmp_path,
        f"""
        type: task
        name: ns-pair
        nodes: 2
        commands:
          - sleep 600
        {SMALL}
        """,
    )
    live = running(team_stack, name)
    nodes = {j["node"] for j in live["jobs"]}
    assert real_cluster.real_nodes is not None
    assert nodes == set(real_cluster.real_nodes.names), live["jobs"]
    stop(team_stack, name)
    wait_until(
        lambda: run(team_stack, name)["status"] in ("terminated", "failed", "done"),
        timeout=START_S,
        what=f"{name} stopped",
    )


def test_a_service_and_a_dev_environment_run_on_real_nodes(
    team_stack: Stack, real_cluster: ClusterState, tmp_path: Path
) -> None:
    """Both reach ``running`` with pod IPs on the real nodes, one GPU each (the quota's two)."""
    assert real_cluster.real_nodes is not None
    web = apply(
        team_stack,
        tmp_path,
        f"""
        type: service
        name: ns-web
        port: 8000
        auth: false
        commands:
          - python3 -m http.server 8000
        {SMALL}
        """,
    )
    ide = apply(
        team_stack,
        tmp_path,
        f"""
        type: dev-environment
        name: ns-ide
        ide: vscode
        {SMALL}
        """,
    )
    for name in (web, ide):
        live = running(team_stack, name)
        [job] = live["jobs"]
        assert job["node"] in real_cluster.real_nodes.names, live
    for name in (web, ide):
        stop(team_stack, name)

    def stopped() -> bool:
        return all(
            run(team_stack, n)["status"] in ("terminated", "failed", "done") for n in (web, ide)
        )

    wait_until(stopped, timeout=START_S, what=f"{web} and {ide} stopped")


def test_the_proxy_worker_followed_the_namespaces_pods_without_a_crash(team_stack: Stack) -> None:
    """Last in the module, after every run above: its pod watch never failed. Jobs follow
    pods through this watch; when its events could not be read, jobs moved only when the
    sweep or a relist came by, and a run took minutes to show ``running``."""
    [proxy] = [p for p in team_stack.processes if p.name == "proxy-worker"]
    text = Path(proxy.log).read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
