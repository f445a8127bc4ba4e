"""Autoscaling pools as capacity the queue plans with: pure rules and the pods they give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.configuration import NodePool, parse_run_configuration
from shared.configuration.server import server_config_from_text
from shared.errors import ConfigError
from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.placement.autoscaling import (
    find_pool,
    is_pool_node,
    pool_affinity,
    pool_node,
    pool_node_name,
    pool_of,
    scale_up_timed_out,
    waiting_reason,
    with_pool_capacity,
)
from shared.placement.offers import Request, match
from shared.queueing import Holding, QueuedRun, plan
from shared.state.records import Job, Placement, Run
from workers.podspec import PodContext, build_job_objects

GPU = "nvidia.com/gpu"
L40S = NodePool(
    name="l40s",
    gpu="L40S",
    gpus_per_node=4,
    max_nodes=2,
    labels={"cloud.example.com/nodegroup": "l40s"},
    cpu=48,
    memory=384,
    scale_up_timeout=600,
)


def a100_node(name: str) -> NodeInventory:
    group = GpuGroup(
        vendor=GpuVendor.NVIDIA, resource=GPU, count=8, product="NVIDIA-A100", name="A100",
        known=True, memory_mib=40960,
    )  # fmt: skip
    room = Resources(cpu_millicores=96_000, memory_bytes=2**40, gpus={GPU: 8})
    return NodeInventory(name=name, gpus=(group,), allocatable=room, free=room)


def queued(run_id: str, gpus: int, model: str = "L40S", *, nodes: int = 1) -> QueuedRun:
    request = Request(gpu_count=gpus, gpu_names=frozenset({model.lower()}), nodes=nodes)
    return QueuedRun(run_id, "main", 0, float(len(run_id)), request, jobs=nodes)


CLUSTER = GpuInventory(nodes=(a100_node("a100-0"),))
BACKEND = (
    "projects:\n- name: main\n  backends:\n  - type: kubernetes\n    kubeconfig: {filename: k}\n"
)


# --- the configuration -----------------------------------------------------------------


def test_pools_are_read_from_the_backend() -> None:
    server = server_config_from_text(
        BACKEND + "    node_pools:\n    - {name: l40s, gpu: L40S, gpus_per_node: 4, max_nodes: 2,"
        " labels: {nodegroup: l40s}, scale_up_timeout: 10m}\n"
    )
    (pool,) = server.backend_for("main").node_pools
    assert (pool.name, pool.gpus_per_node, pool.max_nodes, pool.scale_up_timeout) == (
        "l40s", 4, 2, 600,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pool", "field"),
    [
        ("{name: p, gpu: L40S, max_nodes: 2, labels: {a: b}}", "gpus_per_node"),
        ("{name: p, gpus_per_node: 2, max_nodes: 2, labels: {a: b}}", "gpu"),
        ("{name: p, max_nodes: 0, labels: {a: b}}", "max_nodes"),
        ("{name: p, max_nodes: 1, labels: {}}", "labels"),
        ("{name: p, max_nodes: 1, labels: {berth.dev/pool: x}}", "labels"),
        ("{name: P_1, max_nodes: 1, labels: {a: b}}", "name"),
    ],
)
def test_a_bad_pool_names_its_field(pool: str, field: str) -> None:
    text = BACKEND + f"    node_pools: [{pool}]\n"
    with pytest.raises(ConfigError) as caught:
        server_config_from_text(text)
    assert caught.value.field == f"projects.0.backends.0.node_pools.0.{field}"


def test_two_pools_may_not_share_a_name() -> None:
    pool = "{name: p, max_nodes: 1, labels: {a: b}}"
    text = BACKEND + f"    node_pools: [{pool}, {pool}]\n"
    with pytest.raises(ConfigError, match="each node pool may appear once"):
        server_config_from_text(text)


# --- pools as capacity -------------------------------------------------------------------


def test_a_pool_offers_one_pool_node_per_node_it_may_still_add() -> None:
    grown = with_pool_capacity(CLUSTER, [L40S], existing={"l40s": 0})
    assert [n.name for n in grown.nodes] == ["a100-0", "~pool:l40s:0", "~pool:l40s:1"]
    node = grown.node("~pool:l40s:0")
    assert node is not None
    assert node.gpus[0].name == "L40S" and node.gpus[0].count == 4
    assert node.allocatable.cpu_millicores == 48_000
    shrunk = with_pool_capacity(CLUSTER, [L40S], existing={"l40s": 1})
    assert [n.name for n in shrunk.nodes] == ["a100-0", "~pool:l40s:0"]
    full = with_pool_capacity(CLUSTER, [L40S], existing={"l40s": 2})
    assert full == CLUSTER


def test_a_held_pool_node_keeps_its_name_when_the_pool_shrinks() -> None:
    grown = with_pool_capacity(CLUSTER, [L40S], existing={"l40s": 1}, held=["~pool:l40s:1"])
    assert [n.name for n in grown.nodes] == ["a100-0", "~pool:l40s:1"]


def test_a_pool_the_node_selector_excludes_adds_nothing() -> None:
    grown = with_pool_capacity(CLUSTER, [L40S], existing={}, node_selector={"zone": "z1"})
    assert grown == CLUSTER


def test_pool_node_names_say_which_pool_they_belong_to() -> None:
    name = pool_node_name("l40s", 3)
    assert is_pool_node(name) and pool_of(name) == "l40s"
    assert find_pool([L40S], name) == L40S
    assert pool_of("gpu-node-1") is None and not is_pool_node("gpu-node-1")


def test_a_run_that_fits_only_a_pool_is_possible_and_placed_on_a_pool_node() -> None:
    assert not match(CLUSTER, queued("x", 2).request).possible
    grown = with_pool_capacity(CLUSTER, [L40S], existing={})
    decided = plan(grown, [queued("x", 2)], [])
    (admit,) = decided.admits
    assert is_pool_node(admit.placements[0].node)


def test_existing_nodes_come_before_pool_nodes_of_the_same_fit() -> None:
    real = pool_node(L40S, "l40s-real-0")  # a node the pool already added
    grown = with_pool_capacity(GpuInventory(nodes=(real,)), [L40S], existing={"l40s": 1})
    (admit,) = plan(grown, [queued("x", 4)], []).admits
    assert admit.placements[0].node == "l40s-real-0"


def test_the_queue_never_asks_a_pool_for_more_than_its_maximum() -> None:
    grown = with_pool_capacity(CLUSTER, [L40S], existing={})
    runs = [queued(f"run-{i}", 4) for i in range(3)]
    decided = plan(grown, runs, [])
    assert len(decided.admits) == 2
    assert [w.run_id for w in decided.waits] == ["run-2"]
    assert "waiting for capacity" in decided.waits[0].reason


@given(
    max_nodes=st.integers(1, 4),
    existing=st.integers(0, 4),
    sizes=st.lists(st.integers(1, 4), max_size=8),
    held=st.lists(st.integers(0, 3), max_size=3, unique=True),
)
def test_placements_on_a_pool_never_exceed_the_gpus_it_may_still_add(
    max_nodes: int, existing: int, sizes: list[int], held: list[int]
) -> None:
    pool = L40S.model_copy(update={"max_nodes": max_nodes})
    room = max(0, max_nodes - existing)
    held_names = [pool_node_name("l40s", i) for i in held]
    holdings = [Holding("main", Placement(node=n, gpu_resource=GPU, gpus=4)) for n in held_names]
    grown = with_pool_capacity(CLUSTER, [pool], existing={"l40s": existing}, held=held_names)
    decided = plan(grown, [queued(f"r{i}", g) for i, g in enumerate(sizes)], holdings)
    placed = sum(p.gpus for a in decided.admits for p in a.placements if is_pool_node(p.node))
    still_held = sum(h.placement.gpus for h in holdings if grown.node(h.placement.node))
    assert placed + still_held <= room * 4


# --- the pod and the wait --------------------------------------------------------------


def test_a_pod_on_a_pool_node_asks_for_the_pools_labels_not_a_node_name() -> None:
    run = Run(
        id="r", project="main", name="burst", user="u", configuration={}, configuration_type="task"
    )
    job = Job(
        id="j", run_id="r", project="main", run_name="burst",
        placement=Placement(node="~pool:l40s:0", gpu_resource=GPU, gpus=4),
    )  # fmt: skip
    conf = parse_run_configuration("type: task\nimage: x\nresources: {gpu: L40S:4}")
    pod = build_job_objects(run, job, conf, PodContext(default_image="i", node_pool=L40S)).pod
    assert pod["spec"]["affinity"] == pool_affinity(L40S)
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    terms = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.example.com/nodegroup", "operator": "In", "values": ["l40s"]}
    ]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {GPU: "4"}


def test_the_wait_for_a_node_has_a_reason_and_an_end() -> None:
    assert waiting_reason(L40S) == (
        "waiting for the autoscaler to add a node from pool l40s (up to 600s)"
    )
    assert scale_up_timed_out(L40S, since=1000.0, now=1599.0) is None
    assert scale_up_timed_out(L40S, since=1000.0, now=1600.0) == (
        "the autoscaler added no node to pool l40s within 600s"
    )
