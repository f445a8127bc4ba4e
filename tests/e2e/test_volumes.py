"""Volumes end to end: claims that bind, pods that mount them, placement that follows them.

The session stack runs with only the RBAC ``deploy/k8s`` ships, so these also
prove that it grants what volumes need.

PersistentVolumes are pre-created as API objects (hostPath; KWOK runs nothing)
with a storage class of the test's own, so kube-controller-manager binds the
claims Berth creates or registers to them and to nothing else.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.services import runs as run_service
from api.services import volumes as volume_service
from cli.local.cluster import ClusterState
from shared import kube
from shared.errors import KubeNotFound
from shared.state.records import RunStatus
from tests.e2e.fit_world import PROJECT, FitWorld, fit_world
from tests.polling import wait_until
from tests.stack import Stack
from workers import teardown

pytestmark = pytest.mark.integration

PvFactory = Callable[..., str]


@pytest.fixture
def make_pv(kube_admin: kube.Kube) -> Iterator[PvFactory]:
    """Create hostPath PersistentVolumes of a storage class; deleted after the test."""
    made: list[str] = []

    def make(
        storage_class: str,
        *,
        size: str = "20Gi",
        modes: tuple[str, ...] = ("ReadWriteOnce",),
        node: str | None = None,
    ) -> str:
        name = f"pv-{secrets.token_hex(4)}"
        spec: dict[str, Any] = {
            "capacity": {"storage": size},
            "accessModes": list(modes),
            "storageClassName": storage_class,
            "hostPath": {"path": f"/tmp/{name}"},
            "persistentVolumeReclaimPolicy": "Retain",
        }
        if node is not None:
            spec["nodeAffinity"] = {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            }
        kube_admin.call(
            kube_admin.core.create_persistent_volume, {"metadata": {"name": name}, "spec": spec}
        )
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(KubeNotFound):
            kube_admin.call(kube_admin.core.delete_persistent_volume, name)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _volumes(stack: Stack) -> dict[str, dict[str, Any]]:
    result = stack.cli("volume", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {v["name"]: v for v in json.loads(result.stdout)}


def _claim(k: kube.Kube, namespace: str, name: str) -> Any:
    try:
        return k.call(k.core.read_namespaced_persistent_volume_claim, name, namespace)
    except KubeNotFound:
        return None


def _run(stack: Stack, name: str) -> dict[str, Any]:
    with stack.client() as c:
        data: dict[str, Any] = c.get(f"/api/projects/main/runs/{name}").json()
    return data


# --- through the CLI and the session stack ------------------------------------------------


def test_a_sized_volume_gets_a_berth_labelled_claim_that_binds(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path, make_pv: PvFactory
) -> None:
    storage_class = f"e2e-{secrets.token_hex(3)}"
    make_pv(storage_class, size="20Gi")
    name = f"ckpt-{secrets.token_hex(3)}"
    conf = _write(
        tmp_path,
        "vol.dstack.yml",
        f"""
        type: volume
        name: {name}
        backend: kubernetes
        size: 10GB
        storage_class_name: {storage_class}
        """,
    )
    applied = stack.cli("volume", "apply", "-f", str(conf))
    assert applied.returncode == 0, applied.stderr + stack.logs()
    claim_name = f"berth-main-vol-{name}"
    assert f"claim {claim_name}" in applied.stdout

    claim = _claim(kube_admin, stack.namespace, claim_name)
    assert claim.metadata.labels == {
        kube.LABEL_MANAGED: "berth",
        kube.LABEL_PROJECT: "main",
        "berth.dev/volume": name,
    }
    assert claim.spec.resources.requests == {"storage": "10Gi"}
    assert claim.spec.storage_class_name == storage_class
    listed = wait_until(
        lambda: (v := _volumes(stack)[name])["status"] == "Bound" and v,
        timeout=30,
        what="the claim bound",
    )
    assert listed["capacity"] == "20Gi" and listed["access_modes"] == ["ReadWriteOnce"]

    again = stack.cli("volume", "apply", "-f", str(conf))
    assert again.returncode == 0, again.stderr
    conf.write_text(conf.read_text().replace("10GB", "15GB"))
    reshaped = stack.cli("volume", "apply", "-f", str(conf))
    assert reshaped.returncode == 1
    assert "exists with another configuration" in reshaped.stderr

    assert stack.cli("volume", "delete", name).returncode == 0
    wait_until(
        lambda: _claim(kube_admin, stack.namespace, claim_name) is None,
        timeout=30,
        what="Berth's claim deleted with its volume",
    )


def test_a_run_mounts_its_volumes_read_only_where_asked_and_keeps_them_from_deletion(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path, make_pv: PvFactory
) -> None:
    tag = secrets.token_hex(3)
    storage_class = f"e2e-{tag}"
    make_pv(storage_class)
    make_pv(storage_class)
    data, ref, run_name = f"data-{tag}", f"ref-{tag}", f"mounts-{tag}"
    team_claim = f"team-datasets-{tag}"  # a claim the team made; Berth only registers it
    kube_admin.call(
        kube_admin.core.create_namespaced_persistent_volume_claim,
        stack.namespace,
        {
            "metadata": {"name": team_claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    for file, text in (
        ("data.yml", f"type: volume\nname: {data}\nbackend: kubernetes\nsize: 5GB\n"
         f"storage_class_name: {storage_class}\n"),
        ("ref.yml", f"type: volume\nname: {ref}\nbackend: kubernetes\nclaim_name: {team_claim}\n"),
    ):  # fmt: skip
        applied = stack.cli("volume", "apply", "-f", str(_write(tmp_path, file, text)))
        assert applied.returncode == 0, applied.stderr + stack.logs()

    task = _write(
        tmp_path,
        "run.dstack.yml",
        f"""
        type: task
        name: {run_name}
        commands: [python train.py]
        volumes:
          - {data}:/data
          - {{name: {ref}, path: /datasets, read_only: true}}
        """,
    )
    submitted = stack.cli("apply", "-f", str(task), "-y", "-d")
    assert submitted.returncode == 0, submitted.stderr + stack.logs()
    wait_until(
        lambda: _run(stack, run_name)["status"] == "running",
        timeout=60,
        what=f"{run_name} running",
    )
    pods = kube_admin.call(
        kube_admin.core.list_namespaced_pod,
        stack.namespace,
        label_selector=f"{kube.LABEL_RUN}={run_name}",
    ).items
    (pod,) = pods
    claims = {
        v.persistent_volume_claim.claim_name: v
        for v in pod.spec.volumes
        if v.persistent_volume_claim is not None
    }
    assert set(claims) == {f"berth-main-vol-{data}", team_claim}
    assert not claims[f"berth-main-vol-{data}"].persistent_volume_claim.read_only
    assert claims[team_claim].persistent_volume_claim.read_only is True
    mounts = {m.mount_path: m for m in pod.spec.containers[0].volume_mounts}
    assert not mounts["/data"].read_only
    assert mounts["/datasets"].read_only is True
    assert _volumes(stack)[data]["used_by"] == [run_name]

    refused = stack.cli("volume", "delete", data)
    assert refused.returncode == 1
    assert f"volume '{data}' is used by active runs: {run_name}" in refused.stderr

    assert stack.cli("stop", run_name).returncode == 0
    wait_until(lambda: _run(stack, run_name)["status"] == "terminated", timeout=60, what="stopped")
    for name in (data, ref):
        deleted = stack.cli("volume", "delete", name)
        assert deleted.returncode == 0, deleted.stderr
    assert _claim(kube_admin, stack.namespace, team_claim) is not None  # registered: kept
    wait_until(
        lambda: (
            (c := _claim(kube_admin, stack.namespace, f"berth-main-vol-{data}")) is None
            or c.metadata.deletion_timestamp is not None
        ),
        timeout=30,
        what="Berth's own claim deleted",
    )
    kube_admin.call(
        kube_admin.core.delete_namespaced_persistent_volume_claim, team_claim, stack.namespace
    )


def test_node_directories_are_refused_where_the_project_does_not_allow_them(
    stack: Stack, tmp_path: Path
) -> None:
    task = _write(
        tmp_path,
        "host.dstack.yml",
        """
        type: task
        commands: [ls /data]
        volumes: ['/mnt/datasets:/data']
        """,
    )
    result = stack.cli("apply", "-f", str(task), "-y", "-d")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "instance volumes (node directories) are not allowed in this project" in message
    assert "/mnt/datasets:/data" in message and "allow_host_volumes: true" in message


def test_a_run_naming_a_volume_that_does_not_exist_is_refused(stack: Stack, tmp_path: Path) -> None:
    task = _write(tmp_path, "t.yml", "type: task\ncommands: [ls]\nvolumes: ['nowhere:/data']\n")
    result = stack.cli("apply", "-f", str(task), "-y", "-d")
    assert result.returncode == 1
    assert "no volume named 'nowhere' in project 'main'" in " ".join(result.stderr.split())


def test_registering_a_claim_that_does_not_exist_is_refused(stack: Stack, tmp_path: Path) -> None:
    conf = _write(
        tmp_path, "v.yml", "type: volume\nname: ghost\nbackend: kubernetes\nclaim_name: ghost-pvc\n"
    )
    result = stack.cli("volume", "apply", "-f", str(conf))
    assert result.returncode == 1
    assert "no PersistentVolumeClaim named ghost-pvc" in " ".join(result.stderr.split())


# --- in-process, with a server config of the test's own ------------------------------------


@pytest.fixture
def host_world(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, tmp_path: Path
) -> Iterator[FitWorld]:
    with fit_world(
        local_cluster,
        kube_admin,
        tmp_path,
        namespace=namespace,
        backend={"allow_host_volumes": True},
    ) as world:
        yield world


def _running(world: FitWorld, run: Any) -> Any:
    return wait_until(
        lambda: (r := world.sync(run)).status == "running" and r,
        timeout=60,
        what=f"{run.name} running",
    )


def test_node_directories_mount_as_host_paths_where_the_project_allows_them(
    host_world: FitWorld,
) -> None:
    run = host_world.submit(
        "type: task\nname: host-dirs\ncommands: [ls]\nvolumes:\n"
        "  - /var/cache/hf:/root/.cache/huggingface\n"
        "  - {instance_path: /datasets, path: /datasets, read_only: true}\n"
    )
    assert host_world.place(run).placements
    _running(host_world, run)
    (pod,) = host_world.pods(run)
    host = {v.name: v.host_path.path for v in pod.spec.volumes if v.host_path is not None}
    mounts = {m.name: m for m in pod.spec.containers[0].volume_mounts}
    assert sorted(host.values()) == ["/datasets", "/var/cache/hf"]
    ro = next(n for n, path in host.items() if path == "/datasets")
    assert mounts[ro].mount_path == "/datasets" and mounts[ro].read_only is True


def test_runs_go_where_their_volumes_are_attached(host_world: FitWorld, make_pv: PvFactory) -> None:
    world = host_world
    local_class, shared_class = f"fit-local-{secrets.token_hex(3)}", f"fit-{secrets.token_hex(3)}"
    # A disk that exists on one node only (a local PV), and a plain single-node claim.
    make_pv(local_class, node="kwok-cpu-1")
    make_pv(shared_class)
    _claims(world, {"local-disk": local_class, "shared-rwo": shared_class})

    # Without its volumes a CPU task would go to kwok-cpu-0 (best fit, then name order).
    first = world.submit(
        "type: task\nname: first\ncommands: [train]\n"
        "volumes: ['local-disk:/scratch', 'shared-rwo:/ckpt']\n"
    )
    assert world.place(first).placements[0].node == "kwok-cpu-1"  # the local PV's node affinity
    _running(world, first)

    second = world.submit(
        "type: task\nname: second\ncommands: [eval]\nvolumes: ['shared-rwo:/ckpt']\n"
    )
    assert world.place(second).placements[0].node == "kwok-cpu-1"  # where shared-rwo is mounted now
    _running(world, second)
    assert {p.spec.node_name for p in world.pods(second)} == {"kwok-cpu-1"}

    refused = pytest.raises(Exception, match="used by active runs: first, second")
    with refused:
        volume_service.delete_volume(world.store, world.ctx.clusters, PROJECT, "shared-rwo")


def _claims(world: FitWorld, storage_classes: dict[str, str]) -> None:
    """Register one 5 GB volume per name on its storage class and wait until all bind."""
    for name, storage_class in storage_classes.items():
        volume_service.apply_volume(
            world.store,
            world.ctx.clusters,
            project=PROJECT,
            user="fitter",
            configuration=f"type: volume\nname: {name}\nbackend: kubernetes\nsize: 5GB\n"
            f"storage_class_name: {storage_class}\n",
        )
    wait_until(
        lambda: all(
            v.status == "Bound"
            for v in volume_service.list_volumes(world.store, world.ctx.clusters, PROJECT)
        ),
        timeout=30,
        what="claims bound",
    )


def test_a_run_whose_volumes_are_pinned_to_different_nodes_fails_saying_why(
    host_world: FitWorld, make_pv: PvFactory
) -> None:
    world = host_world
    west, east = f"fit-w-{secrets.token_hex(3)}", f"fit-e-{secrets.token_hex(3)}"
    make_pv(west, node="kwok-cpu-0")
    make_pv(east, node="kwok-cpu-1")
    _claims(world, {"west": west, "east": east})

    run = world.submit("type: task\nname: both\ncommands: [x]\nvolumes: ['west:/w', 'east:/e']\n")
    decision = world.place(run)

    assert decision.placements == []
    assert decision.status == RunStatus.FAILED
    assert decision.reason == (
        "volume west's PersistentVolume is bound to kwok-cpu-0; "
        "volume east's PersistentVolume is bound to kwok-cpu-1"
    )


def test_a_run_waits_outside_the_queue_while_its_claims_are_in_use_on_other_nodes(
    host_world: FitWorld, make_pv: PvFactory
) -> None:
    world = host_world
    local, shared = f"fit-l-{secrets.token_hex(3)}", f"fit-s-{secrets.token_hex(3)}"
    make_pv(local, node="kwok-cpu-1")
    make_pv(shared)
    _claims(world, {"local": local, "shared": shared})
    # The shared claim goes in use on kwok-cpu-0 (best fit); the local one lives on kwok-cpu-1.
    holder = world.submit("type: task\nname: holder\ncommands: [x]\nvolumes: ['shared:/s']\n")
    assert world.place(holder).placements[0].node == "kwok-cpu-0"
    _running(world, holder)

    both = world.submit(
        "type: task\nname: both\ncommands: [x]\nvolumes: ['shared:/s', 'local:/l']\n"
    )
    waiting = world.place(both)
    assert waiting.placements == []
    assert waiting.status == RunStatus.PENDING
    assert waiting.reason == (
        "volume shared (ReadWriteOnce) is in use on kwok-cpu-0; "
        "volume local's PersistentVolume is bound to kwok-cpu-1"
    )

    run_service.stop_run(world.store, world.ctx.celery, world.store.get_run(holder.id), abort=True)
    for job in world.jobs(holder):
        teardown.teardown_job(world.ctx, job.id)
    assert world.store.get_run(holder.id).status.is_finished
    assert world.place(both).placements[0].node == "kwok-cpu-1"
    _running(world, both)


def test_two_runs_queued_together_never_split_an_unused_single_node_claim(
    host_world: FitWorld, make_pv: PvFactory
) -> None:
    world = host_world
    storage_class = f"fit-t-{secrets.token_hex(3)}"
    make_pv(storage_class)
    _claims(world, {"twin": storage_class})
    # 40 of a CPU node's 64 cores each: the two cannot share a node, so placing
    # both in the pass that sees them first would split the claim across nodes.
    conf = "type: task\nname: {}\ncommands: [x]\nresources: {{cpu: 40}}\nvolumes: ['twin:/t']\n"
    first = world.submit(conf.format("first"))
    second = world.submit(conf.format("second"))

    (placed,) = world.place(first).placements
    held = world.store.get_run(second.id)
    assert held.status == RunStatus.PENDING
    assert held.reason == (
        "volume twin (ReadWriteOnce) goes where the run queued before this one with it is placed"
    )
    _running(world, first)

    # From now on the claim pins it to first's node, which has no room left for it.
    again = world.place(second)
    assert again.placements == []
    assert again.status == RunStatus.PENDING
    assert again.reason.startswith("waiting for capacity"), again.reason
    assert [p.spec.node_name for p in world.pods(first)] == [placed.node]
