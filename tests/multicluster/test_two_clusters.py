"""Two clusters behind one project (issue 19): two local control planes, each with its
own KWOK GPU nodes, named by two contexts of one kubeconfig (``east`` and ``west``).

Both clusters get the same node names on purpose (``kwok-a10-0``, ``kwok-a10-1``), as
two real clusters built from one template would: a placement is only meaningful with
its cluster. Berth runs with the admin's credentials here; the shipped RBAC is the
e2e suite's business, and nothing here depends on it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.local import cluster
from cli.local.cluster import ClusterState
from cli.local.processes import start_process
from shared import kube
from shared.errors import KubeError
from tests.polling import wait_until
from tests.stack import Stack, start_stack

pytestmark = pytest.mark.integration

NAMESPACE = "berth-mc"
CLUSTERS = ("east", "west")
POOLS = """
pools:
  - name: a10
    count: 2
    cpu: "32"
    memory: 128Gi
    ephemeral_storage: 500Gi
    gpu: {vendor: nvidia, product: NVIDIA-A10, count: 1, memory_mib: 23028}
"""
OUTAGE_S = 60


@dataclass
class TwoClusters:
    states: dict[str, ClusterState]
    directories: dict[str, Path]
    stack: Stack

    def runs(self) -> dict[str, dict[str, Any]]:
        listed = json.loads(self.stack.cli("ps", "-a", "--json").stdout)
        return {r["name"]: r for r in listed}

    def restart_apiserver(self, name: str) -> None:
        state = self.states[name]
        old = state.processes["kube-apiserver"]
        state.processes["kube-apiserver"] = start_process(
            "kube-apiserver", old.argv, log_dir=Path(old.log).parent
        )
        # So cluster.down stops the new process too.
        (self.directories[name] / "state.json").write_text(state.model_dump_json(indent=2))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoClusters]:
    base = tmp_path_factory.mktemp("two-clusters")
    pools = base / "pools.yaml"
    pools.write_text(POOLS)
    states: dict[str, ClusterState] = {}
    directories = {name: base / name for name in CLUSTERS}
    stack: Stack | None = None
    try:
        for name in CLUSTERS:
            states[name], _ = cluster.up(directories[name], pools_file=pools, timeout_s=180)
            _namespace(Path(states[name].kubeconfig))
        kubeconfig = _merged_kubeconfig(base / "kubeconfig", states)
        stack = start_stack(
            states["east"],
            base / "stack",
            namespace=NAMESPACE,
            workers=2,
            kubeconfig=kubeconfig,
            backend={"contexts": list(CLUSTERS)},
        )
        yield TwoClusters(states=states, directories=directories, stack=stack)
    finally:
        if stack is not None:
            stack.stop()
        for name in states:
            cluster.down(directories[name])


@pytest.fixture(autouse=True)
def _no_runs_left(two: TwoClusters) -> Iterator[None]:
    yield
    active = [n for n, r in two.runs().items() if r["status"] not in FINISHED]
    for name in active:
        two.stack.cli("stop", name)
    wait_until(
        lambda: all(two.runs()[n]["status"] in FINISHED for n in active),
        timeout=120,
        what="every run of the test stopped",
    )


FINISHED = ("done", "failed", "terminated")


def test_offers_show_both_clusters_and_the_same_node_name_in_each(two: TwoClusters) -> None:
    result = two.stack.cli("offer", "--gpu", "A10:1", "--json")
    assert result.returncode == 0, result.stderr
    offers = json.loads(result.stdout)["offers"]
    by_cluster = Counter(o["cluster"] for o in offers)
    assert by_cluster == {"east": 2, "west": 2}, offers
    nodes = {c: {o["node"] for o in offers if o["cluster"] == c} for c in CLUSTERS}
    assert nodes["east"] == nodes["west"] == {"kwok-a10-0", "kwok-a10-1"}
    table = two.stack.cli("offer", "--gpu", "A10:1")
    assert "REGION" in table.stdout and "west" in table.stdout, table.stdout
    # berth nodes: every cluster's nodes, each with its cluster.
    listed = json.loads(two.stack.cli("nodes", "--json").stdout)["nodes"]
    assert sorted((n["cluster"], n["name"]) for n in listed) == [
        (c, f"kwok-a10-{i}") for c in CLUSTERS for i in range(2)
    ]
    assert "REGION" in two.stack.cli("nodes").stdout
    # A fleet's nodes are counted in each cluster, and listed with it.
    fleet = {"type": "fleet", "name": "one-a10", "nodes": "0..1", "resources": {"gpu": "A10"}}
    with two.stack.client() as http:
        r = http.post("/api/projects/main/fleets", json={"configuration": fleet})
        assert r.status_code == 200, r.text
        assert sorted(i["cluster"] for i in r.json()["instances"]) == list(CLUSTERS)
        assert http.delete("/api/projects/main/fleets/one-a10").status_code == 204


def test_each_cluster_has_its_own_jump_host_and_inventory(two: TwoClusters) -> None:
    def jump_hosts() -> dict[str, dict[str, Any]] | None:
        found = json.loads(two.stack.cli("status", "--json").stdout)["jump_hosts"]
        by_cluster = {h["cluster_name"]: h for h in found}
        return by_cluster if set(by_cluster) == set(CLUSTERS) else None

    hosts = wait_until(jump_hosts, timeout=120, what="a jump host in each cluster")
    assert hosts["east"]["cluster"] != hosts["west"]["cluster"]
    for name in CLUSTERS:
        k = kube.connect(kubeconfig=Path(two.states[name].kubeconfig), timeout=10.0)
        try:
            deployment = k.call(k.apps.read_namespaced_deployment, hosts[name]["name"], NAMESPACE)
            assert deployment.metadata.name == hosts[name]["name"]
        finally:
            k.close()
    # One published inventory per cluster: a node cordoned in west leaves east's offers.
    k = kube.connect(kubeconfig=Path(two.states["west"].kubeconfig), timeout=10.0)
    try:
        k.call(k.core.patch_node, "kwok-a10-0", {"spec": {"unschedulable": True}})

        def offered() -> Counter[tuple[str, str]] | None:
            offers = json.loads(two.stack.cli("offer", "--gpu", "A10:1", "--json").stdout)
            found = Counter((o["cluster"], o["node"]) for o in offers["offers"])
            return found if ("west", "kwok-a10-0") not in found else None

        found = wait_until(offered, timeout=60, what="west's cordoned node gone from offers")
        assert set(found) == {
            ("east", "kwok-a10-0"),
            ("east", "kwok-a10-1"),
            ("west", "kwok-a10-1"),
        }
    finally:
        k.call(k.core.patch_node, "kwok-a10-0", {"spec": {"unschedulable": False}})
        k.close()


def test_runs_fill_the_first_cluster_then_the_second_and_then_wait(two: TwoClusters) -> None:
    names = [f"fill-{i}" for i in range(5)]
    for name in names[:4]:
        _submit(two, name)
    running = wait_until(
        lambda: _all_running(two, names[:4]), timeout=120, what="four runs running"
    )
    # The first cluster first, then the next: two GPUs in each.
    assert Counter(_clusters(running[n]) for n in names[:4]) == {"east": 2, "west": 2}
    # Nodes of one name in both clusters, each taken once in its own cluster.
    placed = sorted((_clusters(running[n]), running[n]["jobs"][0]["node"]) for n in names[:4])
    assert len(set(placed)) == 4, placed
    _submit(two, names[4])
    waiting = wait_until(
        lambda: (r := two.runs()[names[4]])["status"] == "pending" and r["reason"] and r,
        timeout=60,
        what="the fifth run waiting",
    )
    assert "waiting for capacity" in waiting["reason"], waiting


def test_a_multi_node_task_stays_inside_one_cluster(two: TwoClusters) -> None:
    # One of east's two nodes taken: a two-node task fits only in west, whole.
    _submit(two, "holder")
    held = wait_until(lambda: _all_running(two, ["holder"]), timeout=90, what="holder running")
    assert _clusters(held["holder"]) == "east"
    _submit(two, "gang", nodes=2)
    gang = wait_until(lambda: _all_running(two, ["gang"]), timeout=120, what="the gang running")
    jobs = gang["gang"]["jobs"]
    assert [j["cluster"] for j in jobs] == ["west", "west"], jobs
    assert {j["node"] for j in jobs} == {"kwok-a10-0", "kwok-a10-1"}


def test_a_requeued_run_leaves_no_pod_behind_in_the_cluster_it_left(two: TwoClusters) -> None:
    # East full: the flaky run's first pod goes to west. East has room again by the time
    # that pod fails and the run is sent back to the queue, so its second pod is made in
    # east. The jobs no longer say where the old pod is; Berth must still delete it, in
    # west, before the run is placed again (the pods of one job share a name, so only a
    # pod left in another cluster could outlive its attempt).
    for name in ("hold-0", "hold-1"):
        _submit(two, name)
    wait_until(lambda: _all_running(two, ["hold-0", "hold-1"]), timeout=90, what="east full")
    flaky = {"KWOK_RUN_FOR": "8s", "KWOK_EXIT_CODE": "3"}
    _submit(two, "flaky", env=flaky, retry={"on_events": ["error"], "duration": "1h"})
    first = wait_until(lambda: _all_running(two, ["flaky"]), timeout=60, what="flaky running")
    assert _clusters(first["flaky"]) == "west"
    two.stack.cli("stop", "hold-0")
    _run_when(two, "hold-0", lambda r: r["status"] in FINISHED, timeout=30)
    second = _run_when(
        two,
        "flaky",
        lambda r: r["status"] == "running" and r["jobs"][0]["cluster"] == "east",
        timeout=90,
    )
    assert second["jobs"][0]["node"], second
    k = kube.connect(kubeconfig=Path(two.states["west"].kubeconfig), timeout=10.0)
    try:
        assert _flaky_pods(k) == []
    finally:
        k.close()


def _flaky_pods(k: kube.Kube) -> list[dict[str, Any]]:
    listed = k.call(k.core.list_namespaced_pod, NAMESPACE, label_selector=f"{kube.LABEL_RUN}=flaky")
    return [
        {"name": p.metadata.name, "attempt": int(p.metadata.labels[kube.LABEL_ATTEMPT])}
        for p in listed.items
    ]


def test_one_apiserver_down_fails_none_of_its_runs_and_the_other_cluster_keeps_starting(
    two: TwoClusters,
) -> None:
    for name in ("e-0", "e-1", "w-0"):
        _submit(two, name)
    before = wait_until(
        lambda: _all_running(two, ["e-0", "e-1", "w-0"]), timeout=120, what="three runs running"
    )
    assert _clusters(before["w-0"]) == "west", before["w-0"]
    west = two.states["west"].processes["kube-apiserver"]
    os.kill(west.pid, signal.SIGKILL)
    down_at = time.monotonic()
    try:
        # East's queue goes on: a GPU freed there is taken by a run submitted now.
        two.stack.cli("stop", "e-0")
        _submit(two, "during")
        during = wait_until(
            lambda: _all_running(two, ["during"]), timeout=OUTAGE_S, what="a run starting in east"
        )
        assert _clusters(during["during"]) == "east"
        # Once Berth knows west is away (berth status says so)...
        wait_until(lambda: _unreachable(two, "west"), timeout=30, what="status: west away")
        assert "does not answer" in two.stack.cli("status").stdout
        # ...a run that east (full now) cannot take waits for west, saying why, instead of
        # being placed where no pod can be made.
        _submit(two, "blocked")
        blocked = _run_when(two, "blocked", lambda r: "does not answer" in r["reason"], timeout=30)
        assert blocked["status"] == "pending", blocked
        assert [j["node"] for j in blocked["jobs"]] == [None], blocked
        assert time.monotonic() - down_at < OUTAGE_S
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        runs = two.runs()
        # Nothing failed for the outage: west's run is as it was, east's run still runs.
        assert runs["w-0"]["status"] == "running", runs["w-0"]
        assert runs["e-1"]["status"] == "running", runs["e-1"]
    finally:
        two.restart_apiserver("west")
    k = kube.connect(kubeconfig=Path(two.states["west"].kubeconfig), timeout=5.0)
    try:
        wait_until(lambda: _answers(k), timeout=120, what="west's apiserver back")
        wait_until(lambda: not _unreachable(two, "west"), timeout=30, what="status: west back")
        # West answers: the waiting run starts there.
        after = wait_until(
            lambda: _all_running(two, ["blocked"]), timeout=120, what="the waiting run in west"
        )
        assert _clusters(after["blocked"]) == "west"
        # Berth follows west again: stopping its run deletes its pod there.
        two.stack.cli("stop", "w-0")
        wait_until(lambda: not _pods(k, "w-0"), timeout=120, what="w-0's pod deleted in west")
    finally:
        k.close()
    assert two.runs()["w-0"]["status"] == "terminated"


def _run_when(
    two: TwoClusters, name: str, check: Callable[[dict[str, Any]], bool], *, timeout: float
) -> dict[str, Any]:
    """The run ``name`` once ``check`` holds; on timeout, the failure shows it as last seen."""
    seen: list[dict[str, Any]] = []

    def found() -> dict[str, Any] | None:
        seen[:] = [two.runs()[name]]
        return seen[0] if check(seen[0]) else None

    try:
        return wait_until(found, timeout=timeout, what=f"{name} as expected")
    except AssertionError as e:
        raise AssertionError(f"{e}; {name} last seen: {seen}") from None


def _unreachable(two: TwoClusters, cluster: str) -> bool:
    found = json.loads(two.stack.cli("status", "--json").stdout)
    return any(b["cluster"] == cluster and b["unreachable"] for b in found["backends"])


def _submit(two: TwoClusters, name: str, *, nodes: int = 1, **extra: Any) -> None:
    conf: dict[str, Any] = {
        "type": "task",
        "name": name,
        "commands": ["python train.py"],
        "resources": {"gpu": "A10:1"},
        **extra,
    }
    if nodes > 1:
        conf["nodes"] = nodes
    with two.stack.client() as http:
        r = http.post("/api/projects/main/runs", json={"configuration": conf})
    assert r.status_code == 202, r.text


def _all_running(two: TwoClusters, names: list[str]) -> dict[str, dict[str, Any]] | None:
    runs = two.runs()
    found = {n: runs[n] for n in names if n in runs}
    if len(found) < len(names):
        return None
    failed = [r for r in found.values() if r["status"] in FINISHED]
    assert not failed, failed
    return found if all(r["status"] == "running" for r in found.values()) else None


def _clusters(run: dict[str, Any]) -> str:
    (only,) = {j["cluster"] for j in run["jobs"]}
    return str(only)


def _answers(k: kube.Kube) -> bool:
    try:
        k.call(k.core.list_namespace, limit=1)
    except KubeError:  # anything but an answer means not yet
        return False
    return True


def _pods(k: kube.Kube, run: str) -> list[str]:
    listed = k.call(k.core.list_namespaced_pod, NAMESPACE, label_selector=f"{kube.LABEL_RUN}={run}")
    return [p.metadata.name for p in listed.items]


def _namespace(kubeconfig: Path) -> None:
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        k.call(k.core.create_namespace, {"metadata": {"name": NAMESPACE}})
        wait_until(lambda: _has_default_sa(k), timeout=60, what=f"the default SA of {NAMESPACE}")
    finally:
        k.close()


def _has_default_sa(k: kube.Kube) -> bool:
    names = [
        sa.metadata.name for sa in k.call(k.core.list_namespaced_service_account, NAMESPACE).items
    ]
    return "default" in names


def _merged_kubeconfig(path: Path, states: dict[str, ClusterState]) -> Path:
    """One kubeconfig, one context per cluster, named as the project's clusters are."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": CLUSTERS[0],
    }
    for name, state in states.items():
        config = yaml.safe_load(Path(state.kubeconfig).read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
        cluster_entry = next(
            c for c in config["clusters"] if c["name"] == context["context"]["cluster"]
        )
        user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
        merged["clusters"].append({"name": name, "cluster": cluster_entry["cluster"]})
        merged["users"].append({"name": name, "user": user["user"]})
        merged["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    path.write_text(yaml.safe_dump(merged))
    return path
