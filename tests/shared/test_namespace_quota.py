"""A namespace's ResourceQuotas as capacity: the arithmetic, and the planner obeying it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.placement.offers import Request
from shared.queueing import QueuedRun, plan
from shared.queueing.namespace_quota import (
    NamespaceQuota,
    QuotaRoom,
    demand,
    quota_from_kube,
    quota_refusal,
    room_for,
)
from shared.state.records import Placement
from tests.shared.test_queue import GPU, admitted, cluster, holding, run


def gpu_quota(hard: int, used: int = 0, name: str = "team-gpus") -> NamespaceQuota:
    return NamespaceQuota(name=name, hard={f"requests.{GPU}": hard}, used={f"requests.{GPU}": used})


def one_gpu_job(node: str = "a0") -> dict[str, int]:
    return demand(Placement(node=node, gpu_resource=GPU, gpus=1))


def kube_quota(
    hard: dict[str, str], used: dict[str, str] | None, *, scopes: list[str] | None = None
) -> client.V1ResourceQuota:
    status = None if used is None else client.V1ResourceQuotaStatus(hard=hard, used=used)
    return client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"),
        spec=client.V1ResourceQuotaSpec(hard=hard, scopes=scopes),
        status=status,
    )


# --- reading quotas ---------------------------------------------------------------------


def test_a_quota_is_read_in_base_units_with_plain_names_meaning_requests() -> None:
    quota = quota_from_kube(
        kube_quota(
            {"cpu": "4", "memory": "8Gi", f"requests.{GPU}": "2", "count/pods": "10"},
            {"cpu": "500m", "memory": "1Gi", f"requests.{GPU}": "1", "count/pods": "3"},
        )
    )
    assert quota is not None
    assert quota.hard == {
        "requests.cpu": 4000,
        "requests.memory": 8 * 2**30,
        f"requests.{GPU}": 2,
        "count/pods": 10,
    }
    assert quota.used["requests.cpu"] == 500
    assert quota.counted


def test_a_quota_the_controller_has_not_counted_yet_admits_nothing_it_covers() -> None:
    quota = quota_from_kube(kube_quota({f"requests.{GPU}": "2"}, None))
    assert quota is not None and not quota.counted
    room = room_for([quota])
    assert room is not None
    assert room.shortfall(one_gpu_job()) == "namespace quota q: not yet counted by Kubernetes"
    assert room.shortfall(demand(Placement(node="a0", cpu_milli=100))) is None


def test_a_scoped_quota_is_not_counted_as_capacity() -> None:
    assert quota_from_kube(kube_quota({"pods": "1"}, {"pods": "1"}, scopes=["BestEffort"])) is None


def test_a_jobs_demand_counts_its_pod_requests_gpu_limits_and_memory_limit() -> None:
    placement = Placement(
        node="a0", gpu_resource=GPU, gpus=2, cpu_milli=1500, memory_bytes=2**30, disk_bytes=0
    )
    assert demand(placement, memory_limit_bytes=2 * 2**30) == {
        "pods": 1,
        "count/pods": 1,
        "requests.cpu": 1500,
        "requests.memory": 2**30,
        f"requests.{GPU}": 2,
        f"limits.{GPU}": 2,
        "limits.memory": 2 * 2**30,
    }


def test_only_refusals_that_free_up_as_pods_end_are_quota_waits() -> None:
    message = (
        'Kubernetes API 403 Forbidden: pods "x" is forbidden: exceeded quota: team-gpus,'
        " requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2,"
        " limited: requests.nvidia.com/gpu=2"
    )
    assert (refusal := quota_refusal(message)) is not None
    assert refusal.startswith("exceeded quota: team-gpus")
    assert quota_refusal("pods x is forbidden: status unknown for quota: q") is not None
    assert quota_refusal("pods x is forbidden: violates PodSecurity restricted") is None
    assert quota_refusal("failed quota: q: must specify limits.memory") is None


# --- what is free -----------------------------------------------------------------------


def test_berths_jobs_whose_pods_status_used_missed_are_added_on_top_of_it() -> None:
    # One Berth pod was counted when the quota was read; a second job is placed and
    # its pod does not exist yet: both GPUs are in use, the third does not fit.
    room = room_for([gpu_quota(2, used=1)], [one_gpu_job()])
    assert room is not None
    assert (
        room.shortfall(one_gpu_job()) == "namespace quota team-gpus: 2 of 2 nvidia.com/gpu in use"
    )


def test_a_namespace_without_quotas_has_no_room_to_check() -> None:
    assert room_for([], [one_gpu_job()]) is None


@given(
    hard=st.integers(0, 16),
    used=st.integers(0, 16),
    uncounted=st.integers(0, 8),
    asks=st.lists(st.integers(1, 4), max_size=10),
)
def test_what_a_pass_admits_never_takes_the_quota_past_its_hard_limit(
    hard: int, used: int, uncounted: int, asks: list[int]
) -> None:
    room = room_for([gpu_quota(hard, used)], [one_gpu_job()] * uncounted)
    assert isinstance(room, QuotaRoom)
    for gpus in asks:
        need = demand(Placement(node="a0", gpu_resource=GPU, gpus=gpus))
        if room.shortfall(need) is None:
            room.take(need)
    taken = room.taken.get(f"requests.{GPU}", 0)
    assert taken == 0 or used + uncounted + taken <= hard


# --- the planner ------------------------------------------------------------------------


def test_runs_past_a_gpu_quota_wait_with_the_quota_named_instead_of_starting() -> None:
    inventory = cluster(("a0", "A100", 8))
    room = room_for([gpu_quota(2)])
    assert room is not None
    runs = [run(f"r{i}", at=i) for i in range(5)]

    result = plan(inventory, runs, [], rooms={"main": room})

    assert admitted(result) == ["r0", "r1"]
    reasons = {w.run_id: w.reason for w in result.waits}
    assert reasons["r2"].startswith("namespace quota team-gpus: 2 of 2 nvidia.com/gpu in use")
    assert reasons["r2"].endswith("position 1 of 3 in main's queue")
    assert result.reservations == {}  # a quota wait holds no nodes back


def test_a_gang_is_admitted_whole_against_the_quota_or_waits_whole() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    room = room_for([gpu_quota(2, used=1)])

    result = plan(inventory, [run("gang", nodes=2)], [], rooms={"main": room} if room else {})

    assert result.admits == []
    assert [w.cause for w in result.waits] == [
        "namespace quota team-gpus: 1 of 2 nvidia.com/gpu in use"
    ]


def test_a_run_behind_one_waiting_for_the_quota_does_not_take_what_it_waits_for() -> None:
    gpus = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    cpus = Resources(cpu_millicores=8000, memory_bytes=2**35)
    inventory = GpuInventory(
        nodes=(*gpus.nodes, NodeInventory(name="c0", allocatable=cpus, free=cpus))
    )
    room = room_for([gpu_quota(2, used=1)])
    assert room is not None
    cpu_only = QueuedRun("cpu", "main", 0, 3.0, Request(cpu_millicores=500))

    result = plan(
        inventory,
        [run("gang", nodes=2, at=1), run("single", at=2), cpu_only],
        [],
        rooms={"main": room},
    )

    assert admitted(result) == ["cpu"]  # it needs none of the GPUs the gang waits for
    single = next(w for w in result.waits if w.run_id == "single")
    assert single.cause.endswith("an earlier run waits for it")


def test_a_run_past_the_quotas_hard_limit_fails_naming_the_quota() -> None:
    room = room_for([gpu_quota(2)])
    result = plan(
        cluster(("a0", "A100", 8)), [run("big", 3)], [], rooms={"main": room} if room else {}
    )
    assert [f.reason for f in result.fails] == [
        "impossible: namespace quota team-gpus allows at most 2 nvidia.com/gpu; the run asks for 3"
    ]


def test_projects_sharing_a_quota_get_its_next_gpu_by_fair_share() -> None:
    # Both projects' runs are in one namespace; "main" already holds the one GPU in use.
    inventory = cluster(("a0", "A100", 8))
    room = room_for([gpu_quota(2, used=1)])
    assert room is not None
    runs = [run("main-2", project="main", at=1), run("other-1", project="other", at=2)]

    result = plan(inventory, runs, [holding("a0", 1, "main")], rooms={"main": room, "other": room})

    assert admitted(result) == ["other-1"]
