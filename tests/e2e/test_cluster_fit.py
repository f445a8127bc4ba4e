"""Pods that fit the cluster a team runs: its pod rules, no internet, autoscaling pools.

The server-config features run in-process (:mod:`tests.e2e.fit_world`) against
the real apiserver, scheduler, controller manager and KWOK. This test plays the
cluster autoscaler itself: a thread that watches for pending pods whose node
affinity asks for a pool's labels and adds a KWOK node with those labels.
"""

from __future__ import annotations

import contextlib
import secrets
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from api.services.offers import offers_for, request_for_query
from cli.local.cluster import ClusterState
from cli.local.nodes import KWOK_ANNOTATION
from shared import kube
from shared.errors import KubeConflict, KubeNotFound
from shared.placement.autoscaling import is_pool_node
from shared.quantity import parse_quantity
from shared.state.records import Run, RunStatus
from tests.e2e.fit_world import PROJECT, FitWorld, fit_world
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

POOL_LABEL = "example.com/nodegroup"
POOL_TAINT = "example.com/burst"  # keeps the session stack's runs off the test's new nodes
_NETWORK = ("curl", "wget", "pip install", "apt-get", "://")


def _until(world: FitWorld, run: Run, status: RunStatus, timeout: float = 60) -> Run:
    """Sync the run's jobs, as the pod watch would, until the run is ``status``."""

    def check() -> Run | None:
        synced = world.sync(run)
        return synced if synced.status == status else None

    return wait_until(check, timeout=timeout, what=f"{run.name} {status}")


def _running(world: FitWorld, run: Run) -> Run:
    return _until(world, run, RunStatus.RUNNING)


# --- pod settings and tags ---------------------------------------------------------------


@pytest.fixture
def cluster_objects(kube_admin: kube.Kube, namespace: str) -> Iterator[dict[str, str]]:
    """A PriorityClass, a RuntimeClass and a ServiceAccount, as a cluster would have them."""
    tag = secrets.token_hex(3)
    names = {"priority": f"batch-{tag}", "runtime": f"nvidia-{tag}", "account": "runner"}
    scheduling = client.SchedulingV1Api(kube_admin.api)
    node = client.NodeV1Api(kube_admin.api)
    kube_admin.call(
        scheduling.create_priority_class, {"metadata": {"name": names["priority"]}, "value": 1000}
    )
    kube_admin.call(
        node.create_runtime_class, {"metadata": {"name": names["runtime"]}, "handler": "nvidia"}
    )
    kube_admin.call(
        kube_admin.core.create_namespaced_service_account,
        namespace,
        {"metadata": {"name": names["account"]}},
    )
    yield names
    kube_admin.call(scheduling.delete_priority_class, names["priority"])
    kube_admin.call(node.delete_runtime_class, names["runtime"])


def test_pods_follow_the_backends_rules_and_carry_the_runs_tags(
    local_cluster: ClusterState,
    kube_admin: kube.Kube,
    namespace: str,
    tmp_path: Path,
    cluster_objects: dict[str, str],
) -> None:
    pod_settings = {
        "node_selector": {"kubernetes.io/hostname": "kwok-cpu-1"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        "labels": {"team": "ml"},
        "annotations": {"example.com/cost-center": "42"},
        "priority_class_name": cluster_objects["priority"],
        "service_account_name": cluster_objects["account"],
        "runtime_class_name": cluster_objects["runtime"],
        "image_pull_secrets": ["regcred"],
        "security_context": {"runAsUser": 1000, "runAsNonRoot": True},
    }
    with fit_world(
        local_cluster, kube_admin, tmp_path, namespace=namespace, backend={"pod": pod_settings}
    ) as world:
        run = world.submit(
            "type: task\nname: shaped\ncommands: [train]\n"
            "tags: {team: other, owner: a@b.com, ticket: ML-1}\n"
        )
        decision = world.place(run)
        # Best fit would pick kwok-cpu-0; the node selector only allows kwok-cpu-1.
        assert decision.placements[0].node == "kwok-cpu-1"
        # The plan a user sees before submitting says the same.
        query = request_for_query(nodes=1, gpu=None, cpu=None, memory=None, disk=None)
        plan = offers_for(world.store, world.ctx.clusters, PROJECT, query)
        assert [o.node for o in plan.offers] == ["kwok-cpu-1"]
        _running(world, run)
        (pod,) = world.pods(run)
    meta, spec = pod.metadata, pod.spec
    assert meta.labels["team"] == "ml"  # the operator's label wins over the run's tag
    assert meta.labels["ticket"] == "ML-1"
    assert meta.labels[kube.LABEL_RUN] == "shaped" and meta.labels[kube.LABEL_MANAGED] == "berth"
    assert meta.annotations["owner"] == "a@b.com"  # not a label value: an annotation
    assert meta.annotations["example.com/cost-center"] == "42"
    assert spec.node_selector == {"kubernetes.io/hostname": "kwok-cpu-1"}
    assert spec.node_name == "kwok-cpu-1"
    assert [(t.key, t.value) for t in spec.tolerations if t.key == "dedicated"] == [
        ("dedicated", "ml")
    ]
    assert spec.priority_class_name == cluster_objects["priority"] and spec.priority == 1000
    assert spec.service_account_name == "runner"
    assert spec.automount_service_account_token is False
    assert spec.runtime_class_name == cluster_objects["runtime"]
    assert [s.name for s in spec.image_pull_secrets] == ["regcred"]
    assert (spec.security_context.run_as_user, spec.security_context.run_as_non_root) == (
        1000,
        True,
    )
    fields = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert fields.node_selector_terms[0].match_fields[0].values == ["kwok-cpu-1"]


def test_a_default_pod_requests_dstacks_cpu_and_memory_and_no_ephemeral_storage(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> None:
    with fit_world(local_cluster, kube_admin, tmp_path, namespace=namespace) as world:
        plain = world.submit("type: task\nname: plain\ncommands: [train]\n")
        sized = world.submit("type: task\nname: sized\ncommands: [x]\nresources: {disk: 200GB..}")
        for run in (plain, sized):
            assert world.place(run).placements
            _running(world, run)
        requests = {
            run.name: world.pods(run)[0].spec.containers[0].resources.requests
            for run in (plain, sized)
        }
    plain_requests = {k: parse_quantity(v) for k, v in requests["plain"].items()}
    assert plain_requests == {"cpu": 2, "memory": 8 * 2**30}
    assert parse_quantity(requests["sized"]["ephemeral-storage"]) == 200 * 2**30


# --- air-gapped pods ---------------------------------------------------------------------


def test_with_an_init_image_the_pod_copies_sshd_in_and_downloads_nothing(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> None:
    with fit_world(
        local_cluster,
        kube_admin,
        tmp_path,
        namespace=namespace,
        backend={"ssh_init_image": "registry.internal/berth-sshd:9.9"},
    ) as world:
        run = world.submit("type: dev-environment\nname: offline\nimage: registry.internal/py\n")
        assert world.place(run).placements
        _running(world, run)
        (pod,) = world.pods(run)
    (init,) = pod.spec.init_containers
    assert init.image == "registry.internal/berth-sshd:9.9"
    assert init.command == ["cp", "-a", "/berth/ssh/.", "/berth/tools/"]
    commands = [part for c in [init, *pod.spec.containers] for part in (c.command or [])]
    assert any("/berth/tools/sshd" in part for part in commands)
    for part in commands:
        assert not any(word in part for word in _NETWORK), part


# --- autoscaling pools -------------------------------------------------------------------


class Autoscaler:
    """Adds a KWOK node of a pool for each pending pod that asks for the pool's labels."""

    def __init__(self, k: kube.Kube, namespace: str, pool: str, *, deadline_s: float) -> None:
        self.k = k
        self.namespace = namespace
        self.pool = pool
        self.deadline_s = deadline_s
        self.added: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"autoscaler-{pool}", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Autoscaler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for name in self.added:
            with contextlib.suppress(KubeNotFound):
                self.k.call(self.k.core.delete_node, name)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            stop_at = threading.Event()
            timer = threading.Timer(self.deadline_s, stop_at.set)
            timer.start()
            try:
                while not (self._stop.is_set() or stop_at.is_set()):
                    for _ in range(self._waiting_pods() - len(self.added)):
                        self._add_node()
                    self._stop.wait(0.2)
            finally:
                timer.cancel()
        except BaseException as e:  # reported by __exit__
            self.error = e

    def _waiting_pods(self) -> int:
        pods = self.k.call(
            self.k.core.list_namespaced_pod, self.namespace, field_selector="status.phase=Pending"
        ).items
        return sum(1 for p in pods if not p.spec.node_name and self._asks_for_pool(p))

    def _asks_for_pool(self, pod: Any) -> bool:
        affinity = pod.spec.affinity
        node = affinity.node_affinity if affinity else None
        required = node.required_during_scheduling_ignored_during_execution if node else None
        for term in required.node_selector_terms if required else []:
            for expr in term.match_expressions or []:
                if expr.key == POOL_LABEL and self.pool in (expr.values or []):
                    return True
        return False

    def _add_node(self) -> None:
        name = f"kwok-{self.pool}-{len(self.added)}"
        resources = {
            "cpu": "48",
            "memory": "384Gi",
            "ephemeral-storage": "500Gi",
            "pods": "110",
            "nvidia.com/gpu": "4",
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    POOL_LABEL: self.pool,
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": "NVIDIA-L40S",
                    "nvidia.com/gpu.count": "4",
                    "nvidia.com/gpu.memory": "46068",
                },
                "annotations": {KWOK_ANNOTATION: "fake"},
            },
            "spec": {
                "taints": [
                    {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                    {"key": POOL_TAINT, "value": "true", "effect": "NoSchedule"},
                ]
            },
            "status": {"capacity": resources, "allocatable": dict(resources)},
        }
        with contextlib.suppress(KubeConflict):
            self.k.call(self.k.core.create_node, body)
        self.added.append(name)


def _pool_backend(pool: str, *, timeout: str, max_nodes: int = 1) -> dict[str, Any]:
    return {
        "node_pools": [
            {
                "name": pool,
                "gpu": "L40S",
                "gpus_per_node": 4,
                "max_nodes": max_nodes,
                "labels": {POOL_LABEL: pool},
                "cpu": 48,
                "memory": "384GB",
                "scale_up_timeout": timeout,
            }
        ],
        "pod": {"tolerations": [{"key": POOL_TAINT, "operator": "Exists"}]},
    }


def test_a_run_that_fits_only_a_pool_waits_for_the_autoscaler_and_then_runs_there(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> None:
    pool = f"burst-{secrets.token_hex(3)}"
    with fit_world(
        local_cluster,
        kube_admin,
        tmp_path,
        namespace=namespace,
        backend=_pool_backend(pool, timeout="5m"),
    ) as world:
        first = world.submit("type: task\nname: grow\ncommands: [train]\nresources: {gpu: L40S:4}")
        assert world.place(first).placements[0].node == f"~pool:{pool}:0"
        waiting = world.sync(first)
        assert waiting.status == RunStatus.PROVISIONING
        assert waiting.reason == (
            f"waiting for the autoscaler to add a node from pool {pool} (up to 300s)"
        )
        (pod,) = world.pods(first)
        assert pod.spec.node_name is None
        # The pool's maximum is one node, which the first run holds already.
        second = world.submit("type: task\nname: more\ncommands: [x]\nresources: {gpu: L40S:4}")
        decided = world.place(second)
        assert not decided.placements
        assert decided.status == RunStatus.PENDING
        assert decided.reason.startswith("waiting for capacity: 4x L40S")

        with Autoscaler(kube_admin, namespace, pool, deadline_s=60) as scaler:
            ran = _running(world, first)
            assert scaler.added == [f"kwok-{pool}-0"]
            (job,) = world.jobs(first)
            assert job.placement is not None and job.placement.node == f"kwok-{pool}-0"
            assert job.reason == "" and ran.reason == ""
            events = [e.message for _, e in world.store.events(first.id)]
            assert f"job 0: the autoscaler added node kwok-{pool}-0" in events
            # The pool is at its maximum and its one node is full: still no room for more.
            assert not world.place(second).placements


def test_a_run_whose_pool_never_grows_fails_or_requeues_as_its_retry_policy_says(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> None:
    pool = f"never-{secrets.token_hex(3)}"
    with fit_world(
        local_cluster,
        kube_admin,
        tmp_path,
        namespace=namespace,
        backend=_pool_backend(pool, timeout="2s", max_nodes=2),
    ) as world:
        once = world.submit("type: task\nname: once\ncommands: [x]\nresources: {gpu: L40S:4}")
        again = world.submit(
            "type: task\nname: again\ncommands: [x]\nresources: {gpu: L40S:4}\n"
            "retry: {on_events: [no-capacity], duration: 1h}\n"
        )
        for run in (once, again):
            (placement,) = world.place(run).placements
            assert is_pool_node(placement.node)
        failed = _until(world, once, RunStatus.FAILED, timeout=30)
        assert failed.reason == f"the autoscaler added no node to pool {pool} within 2s"
        requeued = _until(world, again, RunStatus.PENDING, timeout=30)
        assert requeued.reason.startswith("requeued (attempt 2): retrying after no-capacity")
        (job,) = world.jobs(again)
        assert job.placement is None
        wait_until(lambda: not world.pods(again), timeout=30, what="the waiting pod deleted")


# --- the plan, before anything is submitted ------------------------------------------------


def test_apply_shows_what_each_pod_will_request_before_submitting(
    stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "plan.dstack.yml"
    for text, expected in (
        ("", "each pod requests: cpu=2000m memory=8Gi (no ephemeral-storage: disk not set)"),
        (
            "resources: {gpu: A10:1, cpu: 4.., memory: 16GB.., disk: 200GB..}",
            "each pod requests: cpu=4000m memory=16Gi gpu=1 (A10) ephemeral-storage=200Gi",
        ),
    ):
        path.write_text(
            textwrap.dedent(
                f"""
                type: task
                name: planned
                commands: [python train.py]
                {text}
                """
            )
        )
        result = stack.cli("apply", "-f", str(path), input="n\n")
        assert result.returncode == 1, result.stderr  # declined at the prompt
        assert expected in " ".join(result.stdout.split()), result.stdout
