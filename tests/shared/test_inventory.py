"""GPU inventory from nodes and pods (JSON or client objects): free resources,
schedulability, the builder."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import (
    V1Container,
    V1Node,
    V1NodeCondition,
    V1NodeSpec,
    V1NodeStatus,
    V1NodeSystemInfo,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1ResourceRequirements,
    V1Taint,
)

from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import (
    GpuInventory,
    InventoryBuilder,
    NodeInventory,
    UnknownProduct,
    build_inventory,
    node_pool,
    pod_record,
    pod_requests,
    unschedulable_reasons,
)
from shared.gpu.pod_view import PodMetaView, decode_pod, decode_pod_list
from shared.kube.raw import as_raw

GI = 1024**3

# Labels GFD writes on a node with 8 H100s (GFD README "Generated Labels").
H100_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81559",
}
H100_ALLOCATABLE = {
    "cpu": "191500m",
    "memory": "2013Gi",
    "ephemeral-storage": "3500Gi",
    "nvidia.com/gpu": "8",
    "pods": "110",
}

# --- factories -------------------------------------------------------------------------


def make_node(
    name: str = "gpu-1",
    *,
    labels: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
    ready: str | None = "True",
    ready_reason: str | None = None,
    unschedulable: bool | None = None,
    taints: Sequence[tuple[str, str | None, str]] = (),
    deleting: bool = False,
) -> V1Node:
    conditions = (
        [] if ready is None else [V1NodeCondition(type="Ready", status=ready, reason=ready_reason)]
    )
    return V1Node(
        metadata=V1ObjectMeta(
            name=name,
            labels=dict(H100_LABELS if labels is None else labels),
            deletion_timestamp=datetime(2026, 1, 1, tzinfo=UTC) if deleting else None,
        ),
        spec=V1NodeSpec(
            unschedulable=unschedulable,
            taints=[V1Taint(key=k, value=v, effect=e) for k, v, e in taints] or None,
        ),
        status=V1NodeStatus(
            allocatable=dict(H100_ALLOCATABLE if allocatable is None else allocatable),
            conditions=conditions,
            node_info=_node_info("amd64"),
        ),
    )


def _node_info(arch: str) -> V1NodeSystemInfo:
    blank = dict.fromkeys(
        [
            "boot_id",
            "container_runtime_version",
            "kernel_version",
            "kube_proxy_version",
            "kubelet_version",
            "machine_id",
            "operating_system",
            "os_image",
            "system_uuid",
        ],
        "",
    )
    return V1NodeSystemInfo(architecture=arch, **blank)


def container(
    requests: Mapping[str, str] | None = None,
    limits: Mapping[str, str] | None = None,
    *,
    name: str = "main",
    restart_policy: str | None = None,
) -> V1Container:
    return V1Container(
        name=name,
        image="busybox",
        restart_policy=restart_policy,
        resources=V1ResourceRequirements(
            requests=dict(requests) if requests else None,
            limits=dict(limits) if limits else None,
        ),
    )


def make_pod(
    name: str,
    node: str | None = "gpu-1",
    *,
    namespace: str = "default",
    phase: str | None = "Running",
    containers: Sequence[V1Container] | None = None,
    init_containers: Sequence[V1Container] = (),
    overhead: Mapping[str, str] | None = None,
    pod_requests_: Mapping[str, str] | None = None,
) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        spec=V1PodSpec(
            node_name=node,
            containers=list(containers or [container({"cpu": "1"})]),
            init_containers=list(init_containers) or None,
            overhead=dict(overhead) if overhead else None,
            resources=V1ResourceRequirements(requests=dict(pod_requests_))
            if pod_requests_
            else None,
        ),
        status=V1PodStatus(phase=phase),
    )


def only_node(inventory: GpuInventory) -> NodeInventory:
    (node,) = inventory.nodes
    return node


# --- free resources --------------------------------------------------------------------


def test_free_is_allocatable_minus_the_requests_of_running_pods() -> None:
    pods = [
        make_pod(
            "a", containers=[container({"cpu": "4", "memory": "64Gi", "nvidia.com/gpu": "2"})]
        ),
        make_pod("b", containers=[container({"cpu": "500m", "ephemeral-storage": "100Gi"})]),
    ]
    node = only_node(build_inventory([make_node()], pods))
    assert node.allocatable.cpu_millicores == 191_500
    assert node.allocatable.gpus == {"nvidia.com/gpu": 8}
    assert node.free.cpu_millicores == 191_500 - 4_500
    assert node.free.memory_bytes == (2013 - 64) * GI
    assert node.free.ephemeral_storage_bytes == (3500 - 100) * GI
    assert node.free.gpus == {"nvidia.com/gpu": 6}
    assert node.free_units(node.gpus[0]) == 6


def test_succeeded_and_failed_pods_do_not_hold_resources() -> None:
    gpu = [container({"nvidia.com/gpu": "4"})]
    pods = [
        make_pod("done", phase="Succeeded", containers=gpu),
        make_pod("crashed", phase="Failed", containers=gpu),
        make_pod("running", phase="Running", containers=gpu),
    ]
    assert only_node(build_inventory([make_node()], pods)).free.gpus == {"nvidia.com/gpu": 4}


def test_pending_pods_bound_to_the_node_hold_resources() -> None:
    pods = [make_pod("starting", phase="Pending", containers=[container({"nvidia.com/gpu": "1"})])]
    assert only_node(build_inventory([make_node()], pods)).free.gpus == {"nvidia.com/gpu": 7}


def test_unscheduled_pods_and_pods_on_other_nodes_do_not_count() -> None:
    gpu = [container({"nvidia.com/gpu": "2"})]
    pods = [
        make_pod("queued", node=None, phase="Pending", containers=gpu),
        make_pod("elsewhere", node="gpu-2", containers=gpu),
    ]
    inventory = build_inventory([make_node("gpu-1"), make_node("gpu-2")], pods)
    free = {n.name: n.free.gpus["nvidia.com/gpu"] for n in inventory.nodes}
    assert free == {"gpu-1": 8, "gpu-2": 6}


def test_an_init_container_larger_than_the_app_containers_sets_the_request() -> None:
    pod = make_pod(
        "p",
        containers=[container({"cpu": "1", "memory": "1Gi"})],
        init_containers=[
            container({"cpu": "4", "memory": "512Mi"}, name="migrate"),
            container({"cpu": "2"}, name="warm"),
        ],
    )
    assert pod_requests(pod) == {"cpu": 4000, "memory": GI}


def test_sidecars_add_to_the_app_containers_and_to_later_init_steps() -> None:
    pod = make_pod(
        "p",
        containers=[container({"cpu": "1"})],
        init_containers=[
            container({"cpu": "500m"}, name="proxy", restart_policy="Always"),
            container({"cpu": "2"}, name="setup"),
        ],
    )
    # Steady state 1 + 0.5; the setup step runs next to the proxy: 2 + 0.5.
    assert pod_requests(pod) == {"cpu": 2500}


def test_limits_count_as_requests_when_requests_are_absent() -> None:
    pod = make_pod("p", containers=[container({"cpu": "1"}, {"cpu": "2", "nvidia.com/gpu": "1"})])
    assert pod_requests(pod) == {"cpu": 1000, "nvidia.com/gpu": 1}


def test_pod_overhead_is_added_to_the_requests() -> None:
    pod = make_pod("p", overhead={"cpu": "250m", "memory": "120Mi"})
    assert pod_requests(pod) == {"cpu": 1250, "memory": 120 * 1024**2}


def test_pod_level_requests_replace_the_container_sum_for_cpu_and_memory() -> None:
    pod = make_pod(
        "p",
        containers=[
            container({"cpu": "1", "nvidia.com/gpu": "1"}),
            container({"cpu": "1"}, name="b"),
        ],
        pod_requests_={"cpu": "3", "memory": "8Gi"},
    )
    assert pod_requests(pod) == {"cpu": 3000, "memory": 8 * GI, "nvidia.com/gpu": 1}


def test_each_pods_cpu_is_rounded_up_once_like_the_scheduler() -> None:
    pod = make_pod(
        "p", containers=[container({"cpu": "100u"}), container({"cpu": "100u"}, name="b")]
    )
    assert pod_requests(pod) == {"cpu": 1}


def test_free_never_goes_below_zero_when_a_node_is_overcommitted() -> None:
    shrunk = dict(H100_ALLOCATABLE, **{"nvidia.com/gpu": "7"})  # a GPU fell off the bus
    pods = [make_pod("p", containers=[container({"nvidia.com/gpu": "8"})])]
    node = only_node(build_inventory([make_node(allocatable=shrunk)], pods))
    assert node.free.gpus == {"nvidia.com/gpu": 0}


def test_mig_mixed_profiles_are_counted_separately() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig-1g.5gb.count": "7",
        "nvidia.com/mig-3g.20gb.count": "2",
    }
    allocatable = {"cpu": "32", "nvidia.com/mig-1g.5gb": "7", "nvidia.com/mig-3g.20gb": "2"}
    pods = [make_pod("p", containers=[container({"nvidia.com/mig-1g.5gb": "3"})])]
    node = only_node(build_inventory([make_node(labels=labels, allocatable=allocatable)], pods))
    assert {g.resource: node.free_units(g) for g in node.gpus} == {
        "nvidia.com/mig-1g.5gb": 4,
        "nvidia.com/mig-3g.20gb": 2,
    }


def test_a_malformed_quantity_on_a_hand_made_object_is_skipped_not_fatal() -> None:
    pod = make_pod("p", containers=[container({"cpu": "lots", "memory": "1Gi"})])
    assert pod_requests(pod) == {"memory": GI}


# --- schedulability --------------------------------------------------------------------


def test_a_ready_untainted_node_is_schedulable() -> None:
    node = only_node(build_inventory([make_node()], []))
    assert (node.schedulable, node.reasons, node.arch) == (True, (), "amd64")


def test_a_cordoned_node_is_kept_but_not_schedulable() -> None:
    node = make_node(
        unschedulable=True, taints=[("node.kubernetes.io/unschedulable", None, "NoSchedule")]
    )
    entry = only_node(build_inventory([node], []))
    assert (entry.schedulable, entry.reasons) == (False, ("cordoned",))


def test_a_not_ready_node_says_why() -> None:
    node = make_node(
        ready="False",
        ready_reason="KubeletNotReady",
        taints=[("node.kubernetes.io/not-ready", None, "NoSchedule")],
    )
    assert unschedulable_reasons(node) == ("not ready: Ready=False (KubeletNotReady)",)


def test_a_node_that_never_reported_readiness_is_not_ready() -> None:
    assert unschedulable_reasons(make_node(ready=None)) == (
        "not ready: no Ready condition reported",
    )


def test_no_schedule_and_no_execute_taints_make_a_node_unschedulable() -> None:
    node = make_node(
        taints=[("dedicated", "training", "NoSchedule"), ("maintenance", None, "NoExecute")]
    )
    assert unschedulable_reasons(node) == (
        "taint dedicated=training:NoSchedule",
        "taint maintenance:NoExecute",
    )


def test_gpu_taints_and_prefer_no_schedule_do_not_block_scheduling() -> None:
    node = make_node(
        taints=[
            ("nvidia.com/gpu", "present", "NoSchedule"),
            ("amd.com/gpu", None, "NoSchedule"),
            ("habana.ai/gaudi", None, "NoExecute"),
            ("spot", "true", "PreferNoSchedule"),
        ]
    )
    assert unschedulable_reasons(node) == ()


def test_a_node_being_deleted_is_not_schedulable() -> None:
    assert unschedulable_reasons(make_node(deleting=True)) == ("being deleted",)


def test_a_node_without_gpus_is_listed_with_cpu_and_memory() -> None:
    cpu_node = make_node("cpu-1", labels={}, allocatable={"cpu": "4", "memory": "16Gi"})
    node = only_node(build_inventory([cpu_node], []))
    assert (node.gpus, node.free.cpu_millicores, node.free.gpus) == ((), 4000, {})


# --- unknown products ------------------------------------------------------------------


def test_unknown_products_are_kept_and_reported_with_their_nodes() -> None:
    b300 = {"nvidia.com/gpu.product": "NVIDIA-B300-SXM6-AC"}
    nodes = [
        make_node("b-2", labels=b300),
        make_node("b-1", labels=b300),
        make_node("bare", labels={}),  # device plugin, no GFD
        make_node("h-1"),
    ]
    inventory = build_inventory(nodes, [])
    assert [n.name for n in inventory.nodes] == ["b-1", "b-2", "bare", "h-1"]
    assert inventory.unknown_products == (
        UnknownProduct(vendor=GpuVendor.NVIDIA, product=None, nodes=("bare",)),
        UnknownProduct(
            vendor=GpuVendor.NVIDIA, product="NVIDIA-B300-SXM6-AC", nodes=("b-1", "b-2")
        ),
    )
    assert inventory.node("b-1") is not None
    assert inventory.node("nope") is None


# --- serialisation ---------------------------------------------------------------------


def test_the_compact_json_round_trips() -> None:
    inventory = build_inventory(
        [make_node(), make_node("cordoned", unschedulable=True)],
        [make_pod("p", containers=[container({"nvidia.com/gpu": "1"})])],
    )
    text = inventory.to_json()
    assert GpuInventory.from_json(text) == inventory
    assert '"shared"' not in text  # defaults are left out


def test_stored_json_from_a_newer_writer_is_still_readable() -> None:
    text = (
        '{"nodes": [{"name": "n", "zone": "eu-1", "gpus": [{"vendor": "nvidia",'
        ' "resource": "nvidia.com/gpu", "count": 1, "nvlink": true}]}], "generation": 7}'
    )
    inventory = GpuInventory.from_json(text)
    assert inventory.nodes[0].gpus[0].count == 1


# --- incremental builder ---------------------------------------------------------------


def test_deleting_a_pod_gives_its_gpus_back() -> None:
    builder = InventoryBuilder()
    builder.upsert_node(make_node())
    pod = make_pod("p", containers=[container({"nvidia.com/gpu": "3"})])
    builder.upsert_pod(pod)
    assert only_node(builder.snapshot()).free.gpus == {"nvidia.com/gpu": 5}
    builder.delete_pod(pod)
    assert only_node(builder.snapshot()).free.gpus == {"nvidia.com/gpu": 8}


def test_a_pod_that_finishes_frees_its_requests_on_update() -> None:
    builder = InventoryBuilder()
    builder.upsert_node(make_node())
    gpu = [container({"nvidia.com/gpu": "3"})]
    builder.upsert_pod(make_pod("p", containers=gpu))
    builder.upsert_pod(make_pod("p", phase="Succeeded", containers=gpu))
    assert only_node(builder.snapshot()).free.gpus == {"nvidia.com/gpu": 8}


def test_pods_are_keyed_by_namespace_and_name() -> None:
    builder = InventoryBuilder()
    builder.upsert_node(make_node())
    gpu = [container({"nvidia.com/gpu": "1"})]
    builder.upsert_pod(make_pod("p", namespace="a", containers=gpu))
    builder.upsert_pod(make_pod("p", namespace="b", containers=gpu))
    builder.delete_pod("a/p")
    assert only_node(builder.snapshot()).free.gpus == {"nvidia.com/gpu": 7}


def test_a_deleted_node_leaves_the_inventory_and_comes_back_with_its_pods_counted() -> None:
    builder = InventoryBuilder()
    builder.upsert_node(make_node())
    builder.upsert_pod(make_pod("p", containers=[container({"nvidia.com/gpu": "2"})]))
    builder.delete_node("gpu-1")
    assert builder.snapshot().nodes == ()
    builder.upsert_node(make_node())
    assert only_node(builder.snapshot()).free.gpus == {"nvidia.com/gpu": 6}


def test_reset_replaces_everything_as_after_a_relist() -> None:
    builder = InventoryBuilder()
    builder.upsert_node(make_node("old"))
    builder.upsert_pod(make_pod("gone", node="old"))
    nodes, pods = [make_node("new")], [make_pod("p", node="new")]
    builder.reset(nodes, pods)
    assert builder.snapshot() == build_inventory(nodes, pods)


_NODE_NAMES = ("gpu-1", "gpu-2", "mig-1")
_POD_NAMES = [(ns, f"p{i}") for ns in ("a", "b") for i in range(4)]
_REQUEST_CHOICES = [
    {"cpu": "1"},
    {"cpu": "250m", "memory": "1Gi"},
    {"nvidia.com/gpu": "1"},
    {"nvidia.com/gpu": "4", "cpu": "8", "memory": "64Gi"},
    {"nvidia.com/mig-1g.5gb": "2"},
    {"ephemeral-storage": "10Gi", "cpu": "100u"},
]


@st.composite
def _pods(draw: st.DrawFn) -> V1Pod:
    namespace, name = draw(st.sampled_from(_POD_NAMES))
    containers = [
        container(draw(st.sampled_from(_REQUEST_CHOICES)), name=f"c{i}")
        for i in range(draw(st.integers(min_value=1, max_value=2)))
    ]
    init = [
        container(
            draw(st.sampled_from(_REQUEST_CHOICES)),
            name=f"i{i}",
            restart_policy=draw(st.sampled_from([None, "Always"])),
        )
        for i in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    return make_pod(
        name,
        namespace=namespace,
        node=draw(st.sampled_from([None, *_NODE_NAMES, "ghost"])),
        phase=draw(st.sampled_from([None, "Pending", "Running", "Succeeded", "Failed"])),
        containers=containers,
        init_containers=init,
    )


@st.composite
def _nodes(draw: st.DrawFn) -> V1Node:
    name = draw(st.sampled_from(_NODE_NAMES))
    if name == "mig-1":
        labels = {
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
            "nvidia.com/mig.strategy": "mixed",
        }
        allocatable = {"cpu": "64", "memory": "512Gi", "nvidia.com/mig-1g.5gb": "14"}
    else:
        labels, allocatable = H100_LABELS, dict(H100_ALLOCATABLE)
        allocatable["nvidia.com/gpu"] = str(draw(st.integers(min_value=0, max_value=8)))
    return make_node(
        name, labels=labels, allocatable=allocatable, unschedulable=draw(st.booleans())
    )


_EVENTS = st.one_of(
    st.tuples(st.just("upsert_pod"), _pods()),
    st.tuples(st.just("delete_pod"), st.sampled_from(_POD_NAMES)),
    st.tuples(st.just("upsert_node"), _nodes()),
    st.tuples(st.just("delete_node"), st.sampled_from(_NODE_NAMES)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_EVENTS, max_size=40))
def test_the_incremental_builder_always_equals_a_rebuild_from_scratch(
    events: list[tuple[str, Any]],
) -> None:
    builder = InventoryBuilder()
    nodes: dict[str, V1Node] = {}
    pods: dict[tuple[str, str], V1Pod] = {}
    for kind, item in events:
        if kind == "upsert_pod":
            builder.upsert_pod(item)
            pods[(item.metadata.namespace, item.metadata.name)] = item
        elif kind == "delete_pod":
            builder.delete_pod("/".join(item))
            pods.pop(item, None)
        elif kind == "upsert_node":
            builder.upsert_node(item)
            nodes[item.metadata.name] = item
        else:
            builder.delete_node(item)
            nodes.pop(item, None)
        assert builder.snapshot() == build_inventory(nodes.values(), pods.values())


@settings(max_examples=150, deadline=None)
@given(_pods())
def test_a_pod_reads_the_same_from_its_json_bytes_a_mapping_and_the_client_object(
    pod: V1Pod,
) -> None:
    """The watch decodes LIST pages into views, watch events from mappings; tests and
    one-off reads pass client objects. All three must count a pod alike."""
    raw = as_raw(pod)
    from_object = pod_record(pod)
    assert from_object is not None
    assert pod_record(raw) == from_object
    assert pod_record(decode_pod(json.dumps(raw).encode())) == from_object
    assert from_object.requests == (pod_requests(pod) if from_object.node else {})


def test_a_pod_list_page_keeps_its_items_raw_and_says_where_to_go_on() -> None:
    pods = [as_raw(make_pod(f"p{i}")) for i in range(3)]
    body = {"metadata": {"resourceVersion": "42", "continue": "tok"}, "items": pods}
    page = decode_pod_list(json.dumps(body).encode())
    assert (page.next_page, page.resource_version) == ("tok", "42")
    assert [json.loads(bytes(item)) for item in page.items or ()] == pods
    assert [decode_pod(item).metadata for item in page.items or ()] == [
        PodMetaView(name=f"p{i}", namespace="default") for i in range(3)
    ]
    last = decode_pod_list(b'{"metadata": {"resourceVersion": "43"}, "items": []}')
    assert (last.next_page, last.resource_version, last.items) == (None, "43", [])


@pytest.mark.parametrize(
    "data",
    [b"{not json", b'{"items": [{"spec": {"nodeName": 7}}]}', b'{"items": 3}'],
)
def test_a_page_or_pod_that_is_not_what_the_api_sends_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a pod"):
        for item in decode_pod_list(data).items or ():
            decode_pod(item)


def test_berths_job_pods_are_accounted_by_placement_but_its_jump_pod_counts_like_any_pod() -> None:
    from kubernetes.client import V1ObjectMeta, V1Pod

    from shared.state.inventory_store import is_foreign_pod

    def pod(labels: dict[str, str]) -> V1Pod:
        return V1Pod(metadata=V1ObjectMeta(name="p", namespace="n", labels=labels))

    managed = {"app.kubernetes.io/managed-by": "berth"}
    assert is_foreign_pod(pod({}))
    assert not is_foreign_pod(pod(managed | {"berth.dev/job": "j1"}))
    # The jump host's pod: Berth's, but no job's (it once went uncounted, and a real
    # two-core node was then overbooked by its 10m).
    assert is_foreign_pod(pod(managed | {"berth.dev/jump-host": "berth-jump-30022"}))


@pytest.mark.parametrize(
    ("labels", "pool"),
    [
        ({"cloud.google.com/gke-nodepool": "l4-pool"}, "l4-pool"),
        ({"eks.amazonaws.com/nodegroup": "gpu-ng"}, "gpu-ng"),
        ({"karpenter.sh/nodepool": "h100", "eks.amazonaws.com/nodegroup": ""}, "h100"),
        ({"kubernetes.azure.com/agentpool": "gpunp"}, "gpunp"),
        ({"kubernetes.io/hostname": "n1"}, None),
    ],
)
def test_a_nodes_pool_is_read_from_the_providers_label(
    labels: dict[str, str], pool: str | None
) -> None:
    assert node_pool(labels) == pool


def test_a_pod_that_requests_nothing_is_forgotten_after_its_nodes_other_pods() -> None:
    """Seen on the local cluster: a BestEffort pod deleted after the node's last pod with
    requests made the watcher's consumer crash (KeyError) and relist."""
    builder = InventoryBuilder()
    builder.replace_nodes([make_node(labels=H100_LABELS, allocatable=H100_ALLOCATABLE)])
    best_effort = make_pod("idle", containers=[container()])
    busy = make_pod("busy", containers=[container({"cpu": "2"})])
    assert builder.upsert_pod(best_effort) and builder.upsert_pod(busy)
    assert builder.delete_pod(busy)
    assert builder.delete_pod(best_effort)
    assert only_node(builder.snapshot()).free.cpu_millicores == 191_500
    assert not builder.delete_pod(best_effort)  # twice: nothing left to forget
