"""Which mode the apiserver's answers allow (shared.policy.access.decide), and the GPU affinity
and quota-only queue that namespace-only mode runs on. Pure."""

from __future__ import annotations

from shared.gpu.affinity import gpu_node_affinity, label_values
from shared.gpu.schemes.coreweave import COREWEAVE_GPU_CLASS_LABEL
from shared.gpu.schemes.gfd import GFD_PRODUCT_LABEL
from shared.gpu.schemes.gke import GKE_ACCELERATOR_LABEL
from shared.gpu.schemes.karpenter import KARPENTER_GPU_NAME_LABEL
from shared.placement.offers import Request
from shared.policy.access import CLUSTER_READS, Check, Mode, decide, namespace_needs
from shared.queueing.model import Holding, QueuedRun
from shared.queueing.namespace_only import SCHEDULER_NODE, gpu_resource, plan_namespace_only
from shared.queueing.namespace_quota import NamespaceQuota, room_for
from shared.state.records import Placement

NS = "team"


def answers(*, denied: tuple[Check, ...] = ()) -> dict[Check, bool]:
    every = (*namespace_needs(NS), *CLUSTER_READS)
    return {c: c not in denied for c in every}


def test_cluster_wide_reads_and_pods_in_the_namespace_mean_cluster_mode() -> None:
    mode, reason = decide(answers(), namespace=NS)
    assert mode == Mode.CLUSTER
    assert "every namespace" in reason


def test_without_node_reads_berth_runs_in_namespace_mode_and_says_which_read_it_lacks() -> None:
    mode, reason = decide(answers(denied=(Check("list", "nodes"),)), namespace=NS)
    assert mode == Mode.NAMESPACE
    assert reason.startswith("may not list nodes at the cluster scope")


def test_without_watching_pods_everywhere_it_is_namespace_mode_too() -> None:
    mode, _ = decide(answers(denied=(Check("watch", "pods"),)), namespace=NS)
    assert mode == Mode.NAMESPACE


def test_without_pods_in_its_namespace_nothing_can_run_whatever_else_it_may_read() -> None:
    mode, reason = decide(answers(denied=(Check("create", "pods", NS),)), namespace=NS)
    assert mode == Mode.NONE
    assert "create pods in namespace team" in reason


def test_an_unanswered_question_counts_as_a_no() -> None:
    mode, _ = decide({}, namespace=NS)
    assert mode == Mode.NONE


def term_labels(affinity: dict[str, object]) -> dict[str, list[str]]:
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][  # type: ignore[index]
        "nodeSelectorTerms"
    ]
    out: dict[str, list[str]] = {}
    for term in terms:
        [expr] = term["matchExpressions"]
        assert expr["operator"] == "In"
        out[expr["key"]] = expr["values"]
    return out


def test_a_gpu_name_becomes_one_term_per_label_scheme_since_terms_are_ored() -> None:
    affinity = gpu_node_affinity(Request(gpu_count=1, gpu_names=frozenset({"h100"})))
    assert affinity is not None
    labels = term_labels(affinity)
    assert set(labels) == {
        GFD_PRODUCT_LABEL,
        GKE_ACCELERATOR_LABEL,
        KARPENTER_GPU_NAME_LABEL,
        COREWEAVE_GPU_CLASS_LABEL,
    }
    assert "NVIDIA-H100-80GB-HBM3" in labels[GFD_PRODUCT_LABEL]
    assert labels[GKE_ACCELERATOR_LABEL] == ["nvidia-h100-80gb", "nvidia-h100-mega-80gb"]
    assert labels[KARPENTER_GPU_NAME_LABEL] == ["h100"]
    assert "H100_NVLINK_80GB" in labels[COREWEAVE_GPU_CLASS_LABEL]
    assert not any("A100" in v.upper() for values in labels.values() for v in values)


def test_memory_narrows_a_name_to_the_variants_that_have_it() -> None:
    values = label_values(
        Request(gpu_count=1, gpu_names=frozenset({"a100"}), gpu_memory_mib_min=80 * 1024)
    )
    assert values[GFD_PRODUCT_LABEL] == ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe")
    assert values[GKE_ACCELERATOR_LABEL] == ("nvidia-a100-80gb",)


def test_memory_alone_selects_every_gpu_with_at_least_that_much() -> None:
    values = label_values(Request(gpu_count=1, gpu_memory_mib_min=48 * 1024))
    gfd = values[GFD_PRODUCT_LABEL]
    assert "NVIDIA-L40S" in gfd and "NVIDIA-H100-80GB-HBM3" in gfd
    assert "NVIDIA-L4" not in gfd and "Tesla-T4" not in gfd


def test_any_gpu_or_no_gpu_needs_no_affinity() -> None:
    assert gpu_node_affinity(Request(gpu_count=2)) is None
    assert gpu_node_affinity(Request(cpu_millicores=1000)) is None


def test_a_gpu_no_label_value_names_is_refused_rather_than_left_unplaceable() -> None:
    try:
        gpu_node_affinity(Request(gpu_count=1, gpu_names=frozenset({"b300"})))
    except ValueError as e:
        assert "B300" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_gpu_resources_follow_the_vendor_of_the_named_gpu() -> None:
    assert gpu_resource(Request(gpu_count=1)) == "nvidia.com/gpu"
    assert gpu_resource(Request(gpu_count=1, gpu_names=frozenset({"mi300x"}))) == "amd.com/gpu"
    assert gpu_resource(Request(cpu_millicores=500)) is None


def queued(run_id: str, *, project: str = "p", at: float = 0.0, gpus: int = 1, nodes: int = 1):  # type: ignore[no-untyped-def]
    request = Request(gpu_count=gpus, nodes=nodes, cpu_millicores=1000)
    return QueuedRun(run_id, project, 0, at, request, jobs=nodes)


def gpu_quota(hard: int, used: int = 0) -> NamespaceQuota:
    return NamespaceQuota(
        name="team-gpus",
        hard={"requests.nvidia.com/gpu": hard},
        used={"requests.nvidia.com/gpu": used},
    )


def test_without_a_quota_every_run_is_admitted_for_the_kube_scheduler_to_place() -> None:
    plan = plan_namespace_only([queued("a"), queued("b", nodes=2)], [])
    assert [a.run_id for a in plan.admits] == ["a", "b"]
    assert all(p.node == SCHEDULER_NODE for a in plan.admits for p in a.placements)
    assert [p.gpus for p in plan.admits[1].placements] == [1, 1]
    assert plan.admits[0].placements[0].gpu_resource == "nvidia.com/gpu"


def test_the_quota_admits_in_queue_order_and_the_rest_wait_naming_it() -> None:
    room = room_for([gpu_quota(2, used=1)])
    assert room is not None
    plan = plan_namespace_only([queued("late", at=2), queued("first", at=1)], [], rooms={"p": room})
    assert [a.run_id for a in plan.admits] == ["first"]
    [wait] = plan.waits
    assert wait.run_id == "late"
    assert wait.cause == "namespace quota team-gpus: 2 of 2 nvidia.com/gpu in use"
    assert (wait.position, wait.queued) == (1, 1)


def test_a_gang_is_admitted_whole_or_waits_whole() -> None:
    room = room_for([gpu_quota(2, used=1)])
    assert room is not None
    plan = plan_namespace_only([queued("gang", nodes=2)], [], rooms={"p": room})
    assert not plan.admits
    assert [w.run_id for w in plan.waits] == ["gang"]


def test_a_run_beyond_the_hard_limit_fails_naming_the_quota() -> None:
    room = room_for([gpu_quota(2)])
    assert room is not None
    plan = plan_namespace_only([queued("big", gpus=3)], [], rooms={"p": room})
    [fail] = plan.fails
    assert "namespace quota team-gpus allows at most 2" in fail.reason


def test_the_project_holding_fewer_gpus_goes_first() -> None:
    room = room_for([gpu_quota(3, used=2)])
    assert room is not None
    busy = Holding("busy", Placement(node=SCHEDULER_NODE, gpu_resource="nvidia.com/gpu", gpus=2))
    plan = plan_namespace_only(
        [queued("b1", project="busy", at=0), queued("i1", project="idle", at=5)],
        [busy],
        rooms={"busy": room, "idle": room},
    )
    assert [a.run_id for a in plan.admits] == ["i1"]
