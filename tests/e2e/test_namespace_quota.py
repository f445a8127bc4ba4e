"""A ResourceQuota on the runs namespace is capacity: runs wait for it instead of failing.

These tests put a quota on their namespace, so they run a stack of their own
(namespace ``berth-quota-e2e``, Berth's shipped RBAC, its own Redis prefix)
rather than the session's, whose other tests must not meet a quota. Runs are
pinned to the A100 nodes (16 GPUs): only the quota limits them. The last test
runs Berth in-process (:mod:`tests.e2e.fit_world`) with RBAC that may not read
quotas, in a namespace of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from shared.clusters import Cluster
from shared.errors import KubeNotFound
from shared.policy.resource_quotas import QuotaReader, namespace_key
from shared.state.records import RunStatus
from tests.e2e.fit_world import PROJECT, fit_world
from tests.polling import wait_until
from tests.rbac import berth_kubeconfig
from tests.stack import Stack, start_stack

pytestmark = pytest.mark.integration

NAMESPACE = "berth-quota-e2e"
QUOTA = "team-gpus"
GPU_KEY = "requests.nvidia.com/gpu"
LIVE = ("Pending", "Running")


@pytest.fixture(scope="module")
def quota_stack(
    local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    k = kube_admin
    k.call(k.core.create_namespace, {"metadata": {"name": NAMESPACE}})
    directory = tmp_path_factory.mktemp("quota-stack")
    kubeconfig = berth_kubeconfig(k, local_cluster, namespace=NAMESPACE, directory=directory)
    # These tests edit the quota and submit at once: the API reads it on every submission
    # (keeping reads a while is tested in tests/integration/test_namespace_reads.py).
    stack = start_stack(
        local_cluster,
        directory,
        namespace=NAMESPACE,
        kubeconfig=kubeconfig,
        env={"BERTH_KUBE__NAMESPACE_READ_TTL_S": "0"},
    )
    try:
        yield stack
    finally:
        stack.stop()
        k.call(k.core.delete_namespace, NAMESPACE)


class Quota:
    """The namespace's ``team-gpus`` ResourceQuota, set and read as the admin."""

    def __init__(self, k: kube.Kube) -> None:
        self.k = k

    def set(self, gpus: int) -> None:
        body = {"metadata": {"name": QUOTA}, "spec": {"hard": {GPU_KEY: str(gpus)}}}
        try:
            self.k.call(self.k.core.replace_namespaced_resource_quota, QUOTA, NAMESPACE, body)
        except KubeNotFound:
            self.k.call(self.k.core.create_namespaced_resource_quota, NAMESPACE, body)
        # Admission refuses what a quota covers until the controller has counted it.
        wait_until(
            lambda: (self._status_hard() or {}).get(GPU_KEY) == str(gpus),
            timeout=30,
            what=f"quota {QUOTA} counted at {gpus}",
        )

    def delete(self) -> None:
        with contextlib.suppress(KubeNotFound):
            self.k.call(self.k.core.delete_namespaced_resource_quota, QUOTA, NAMESPACE)

    def _status_hard(self) -> dict[str, str] | None:
        quota = self.k.call(self.k.core.read_namespaced_resource_quota, QUOTA, NAMESPACE)
        return quota.status.hard if quota.status else None


class Runs:
    """Submit and read runs through the stack's API."""

    def __init__(self, stack: Stack, k: kube.Kube) -> None:
        self.stack = stack
        self.k = k
        self.names: list[str] = []

    def submit(self, name: str, *, seconds: int | None = 2, **conf: Any) -> None:
        self.names.append(name)
        r = self.post("", name, seconds=seconds, **conf)
        assert r.status_code == 202, r.text

    def post(self, path: str, name: str, *, seconds: int | None = 2, **conf: Any) -> Any:
        body = {
            "type": "task",
            "name": name,
            "commands": ["train"],
            "resources": {"gpu": "A100:1"},
            **({"env": {"KWOK_RUN_FOR": f"{seconds}s"}} if seconds else {}),
            **conf,
        }
        with self.stack.client() as c:
            return c.post(f"/api/projects/main/runs{path}", json={"configuration": body})

    def get(self, name: str) -> dict[str, Any]:
        with self.stack.client() as c:
            r = c.get(f"/api/projects/main/runs/{name}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def wait(self, name: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            run = self.get(name)
            return run if run["status"] in statuses else None

        try:
            return wait_until(check, timeout=timeout, what=f"{name} {'/'.join(statuses)}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nrun: {self.get(name)}\n{self.stack.logs()}") from None

    def wait_reason(self, name: str, words: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            run = self.get(name)
            return run if words in run["reason"] else None

        try:
            return wait_until(check, timeout=timeout, what=f"{name} waiting for {words!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nrun: {self.get(name)}") from None

    def stop(self, name: str) -> None:
        with self.stack.client() as c:
            r = c.post(f"/api/projects/main/runs/{name}/stop", json={"abort": True})
        assert r.status_code == 200, r.text

    def live_gpu_pods(self) -> int:
        pods = self.k.call(self.k.core.list_namespaced_pod, NAMESPACE).items
        return sum(
            1
            for p in pods
            if p.status.phase in LIVE and (p.metadata.labels or {}).get(kube.LABEL_RUN)
        )

    def events(self, name: str) -> list[str]:
        with self.stack.client() as c:
            events = c.get(f"/api/projects/main/runs/{name}/events").json()
        return [e["message"] for e in events]

    def finish_all(self) -> None:
        for name in self.names:
            if not RunStatus(self.get(name)["status"]).is_finished:
                self.stop(name)
        for name in self.names:
            self.wait(name, "done", "failed", "terminated")


@pytest.fixture
def quota(kube_admin: kube.Kube, quota_stack: Stack) -> Iterator[Quota]:
    q = Quota(kube_admin)
    try:
        yield q
    finally:
        q.delete()


@pytest.fixture
def runs(quota_stack: Stack, kube_admin: kube.Kube) -> Iterator[Runs]:
    r = Runs(quota_stack, kube_admin)
    try:
        yield r
    finally:
        r.finish_all()


def test_five_single_gpu_tasks_under_a_two_gpu_quota_all_finish_two_at_a_time(
    quota: Quota, runs: Runs
) -> None:
    quota.set(2)
    names = [f"q5-{i}" for i in range(5)]
    for name in names:
        runs.submit(name)

    most, reasons = 0, set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        most = max(most, runs.live_gpu_pods())
        states = [runs.get(n) for n in names]
        reasons |= {s["reason"] for s in states if s["status"] == "pending"}
        if all(RunStatus(s["status"]).is_finished for s in states):
            break
        time.sleep(0.1)  # sampling the pods, not waiting for them
    assert [runs.get(n)["status"] for n in names] == ["done"] * 5, runs.stack.logs()
    assert most <= 2
    assert any(
        r.startswith(f"namespace quota {QUOTA}: 2 of 2 nvidia.com/gpu in use") for r in reasons
    ), reasons
    # Berth's arithmetic kept it below the quota: the apiserver never had to refuse a pod.
    assert not [m for n in names for m in runs.events(n) if "refused for namespace quota" in m]


def test_a_two_node_task_waits_whole_while_one_of_two_quota_gpus_is_in_use(
    quota: Quota, runs: Runs
) -> None:
    quota.set(2)
    runs.submit("holder", seconds=None)
    runs.wait("holder", "running")

    runs.submit("gang", nodes=2)
    waiting = runs.wait_reason("gang", f"namespace quota {QUOTA}: 1 of 2 nvidia.com/gpu in use")
    assert all(j["status"] == "pending" for j in waiting["jobs"])
    assert runs.live_gpu_pods() == 1

    runs.stop("holder")
    runs.wait("gang", "done", timeout=90)


def test_a_run_asking_more_than_the_quota_allows_fails_at_submission_naming_it(
    quota: Quota, runs: Runs
) -> None:
    quota.set(2)
    for path in ("", "/plan"):
        r = runs.post(path, "too-big", resources={"gpu": "A100:3"})
        assert r.status_code == 422, r.text
        assert f"namespace quota {QUOTA} allows at most 2 nvidia.com/gpu" in r.text
    r = runs.post("/plan", "fits", resources={"gpu": "A100:2"})
    assert r.status_code == 200, r.text


def test_a_quota_raised_lowered_and_deleted_while_runs_wait_and_run(
    quota: Quota, runs: Runs
) -> None:
    quota.set(1)
    runs.submit("first", seconds=None)
    runs.wait("first", "running")
    runs.submit("second", seconds=None)
    runs.wait_reason("second", f"namespace quota {QUOTA}: 1 of 1 nvidia.com/gpu in use")

    quota.set(2)  # raised: the waiting run starts in a following pass
    runs.wait("second", "running", timeout=30)

    quota.set(1)  # lowered below what runs: nothing running is touched
    runs.submit("third")
    runs.wait_reason("third", f"namespace quota {QUOTA}: 2 of 1 nvidia.com/gpu in use")
    assert runs.get("first")["status"] == runs.get("second")["status"] == "running"

    quota.delete()  # gone: nothing limits the namespace any more
    runs.wait("third", "done", timeout=60)
    assert runs.get("first")["status"] == runs.get("second")["status"] == "running"


# --- without the right to read quotas ------------------------------------------------


def test_without_rbac_for_quotas_berth_asks_rarely_and_a_pod_refused_for_quota_waits(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = berth_kubeconfig(
        kube_admin,
        local_cluster,
        namespace=namespace,
        directory=tmp_path,
        without=frozenset({"resourcequotas"}),
    )
    body = {"metadata": {"name": QUOTA}, "spec": {"hard": {GPU_KEY: "1"}}}
    kube_admin.call(kube_admin.core.create_namespaced_resource_quota, namespace, body)
    wait_until(
        lambda: (
            kube_admin.call(
                kube_admin.core.read_namespaced_resource_quota, QUOTA, namespace
            ).status.hard
        ),
        timeout=30,
        what="the quota counted",
    )
    backend = {"kubeconfig": {"filename": str(kubeconfig)}}
    with fit_world(local_cluster, kube_admin, tmp_path, namespace=namespace, backend=backend) as w:
        task = "type: task\ncommands: [train]\nresources: {gpu: A100:1}\nname: "
        first = w.submit(task + "first")
        assert w.place(first).status == RunStatus.PROVISIONING

        second = w.submit(task + "second")  # not refused: Berth cannot see the quota
        decision = w.place(second)

        # Placed blind, refused by quota admission, and back in the queue: not failed.
        assert decision.status == RunStatus.PENDING, decision
        [job] = w.jobs(second)
        assert job.status == RunStatus.PENDING and job.placement is None
        assert f"pod refused for namespace quota: exceeded quota: {QUOTA}" in job.reason

        # The 403 on the quota LIST is remembered: the next passes do not ask again.
        asked: list[str] = []

        def cluster() -> Cluster:
            asked.append("list")
            return w.ctx.clusters.for_project(PROJECT)

        reader = QuotaReader(ttl_s=0.0, forbidden_recheck_s=60.0)
        key = namespace_key(w.ctx.clusters.key_for(PROJECT), namespace)
        assert reader.read(key, cluster, counted=frozenset()) is None
        assert reader.read(key, cluster, counted=frozenset()) is None
        assert asked == ["list"]

        kube_admin.call(kube_admin.core.delete_namespaced_resource_quota, QUOTA, namespace)
        # The admission plugin's cache may still hold the quota for a moment.
        wait_until(
            lambda: w.place(second).status == RunStatus.PROVISIONING,
            timeout=30,
            what="the second run placed once the quota is gone",
        )
