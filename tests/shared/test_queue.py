"""The queue's pure core: order, positions, gangs, backfill, quotas and fair share."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.placement.offers import Request
from shared.queueing import Holding, Plan, QueuedRun, plan
from shared.queueing.limits import Limits, gang_not_ready, may_retry, time_is_up, waited_too_long
from shared.queueing.order import queue_key
from shared.state.records import Job, Placement, RunStatus

GPU = "nvidia.com/gpu"

# --- factories -------------------------------------------------------------------------


def gpu_node(name: str, model: str = "A100", count: int = 8) -> NodeInventory:
    group = GpuGroup(
        vendor=GpuVendor.NVIDIA,
        resource=GPU,
        count=count,
        product=f"NVIDIA-{model}",
        name=model,
        known=True,
        memory_mib=40960,
    )
    room = Resources(cpu_millicores=96_000, memory_bytes=2**40, gpus={GPU: count})
    return NodeInventory(name=name, gpus=(group,), allocatable=room, free=room)


def cluster(*nodes: tuple[str, str, int]) -> GpuInventory:
    return GpuInventory(nodes=tuple(gpu_node(n, m, c) for n, m, c in nodes))


def request(gpus: int, model: str = "A100", *, nodes: int = 1) -> Request:
    return Request(gpu_count=gpus, gpu_names=frozenset({model.lower()}), nodes=nodes)


def run(
    run_id: str,
    gpus: int = 1,
    *,
    model: str = "A100",
    project: str = "main",
    priority: int = 0,
    at: float = 0.0,
    nodes: int = 1,
) -> QueuedRun:
    return QueuedRun(
        run_id=run_id,
        project=project,
        priority=priority,
        submitted_at=at,
        request=request(gpus, model, nodes=nodes),
        jobs=nodes,
    )


def holding(node: str, gpus: int, project: str = "main") -> Holding:
    return Holding(project, Placement(node=node, gpu_resource=GPU, gpus=gpus))


def admitted(result: Plan) -> list[str]:
    return [a.run_id for a in result.admits]


def used_per_node(result: Plan, holdings: list[Holding]) -> Counter[str]:
    used: Counter[str] = Counter()
    for h in holdings:
        used[h.placement.node] += h.placement.gpus
    for admit in result.admits:
        for p in admit.placements:
            used[p.node] += p.gpus
    return used


def usage(result: Plan, holdings: list[Holding]) -> Counter[str]:
    per_project: Counter[str] = Counter()
    for h in holdings:
        per_project[h.project] += h.placement.gpus
    for admit in result.admits:
        per_project[admit.project] += sum(p.gpus for p in admit.placements)
    return per_project


# --- examples --------------------------------------------------------------------------


def test_a_full_cluster_queues_everything_with_positions_in_priority_then_fifo_order() -> None:
    inventory = cluster(("a0", "A100", 2))
    holdings = [holding("a0", 2)]
    runs = [run("late-high", priority=5, at=3), run("early", at=1), run("later", at=2)]

    result = plan(inventory, runs, holdings)

    assert result.admits == []
    by_id = {w.run_id: w for w in result.waits}
    assert [by_id[r].position for r in ("late-high", "early", "later")] == [1, 2, 3]
    assert all(w.queued == 3 for w in result.waits)
    assert by_id["early"].reason.startswith("waiting for capacity: 1x A100")
    assert by_id["early"].reason.endswith("position 2 of 3 in main's queue")


def test_freed_gpus_go_to_the_highest_priority_then_the_oldest_run() -> None:
    inventory = cluster(("a0", "A100", 8))
    runs = [run(f"r{i}", at=i) for i in range(6)] + [run("urgent", priority=50, at=10)]

    result = plan(inventory, runs, [holding("a0", 5)])

    assert admitted(result) == ["urgent", "r0", "r1"]


def test_an_impossible_request_fails_at_once_and_does_not_block_the_queue() -> None:
    inventory = cluster(("a0", "A100", 8))

    result = plan(inventory, [run("huge", 16, at=0), run("small", 1, at=1)], [])

    assert [f.run_id for f in result.fails] == ["huge"]
    assert "impossible" in result.fails[0].reason
    assert admitted(result) == ["small"]


def test_a_small_run_backfills_without_taking_the_nodes_reserved_for_a_big_one() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    holdings = [holding("a0", 2), holding("a1", 6)]
    runs = [run("big", 8, at=0), run("small", 1, at=1), run("small2", 2, at=2)]

    result = plan(inventory, runs, holdings)

    # big would wait least on a0 (6 of 8 free): a0 is held for it, the rest go to a1.
    assert result.reservations["big"] == ("a0",)
    assert admitted(result) == ["small"]
    assert {p.node for a in result.admits for p in a.placements} == {"a1"}
    small2 = next(w for w in result.waits if w.run_id == "small2")
    assert small2.position == 2


def test_the_big_run_starts_once_its_reserved_node_drains() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    runs = [run("big", 8, at=0), run("small", 1, at=1)]

    result = plan(inventory, runs, [holding("a1", 8)])

    assert admitted(result) == ["big"]
    assert result.admits[0].placements[0].node == "a0"


def test_a_gang_is_placed_on_distinct_nodes_or_not_at_all() -> None:
    inventory = cluster(*((f"h{i}", "H100", 8) for i in range(4)))
    gang = run("gang", 8, model="H100", nodes=4)

    blocked = plan(inventory, [gang], [holding("h2", 1)])
    assert blocked.admits == []
    assert blocked.waits[0].cause.startswith("waiting for capacity: 8x H100 on 4 node(s)")

    placed = plan(inventory, [gang], [])
    assert [sorted(p.node for p in a.placements) for a in placed.admits] == [
        ["h0", "h1", "h2", "h3"]
    ]


def _mixed(run_id: str, *requests: Request, gang: bool = False) -> QueuedRun:
    """A run whose groups ask for different resources: one request per job."""
    return QueuedRun(
        run_id=run_id,
        project="main",
        priority=0,
        submitted_at=0.0,
        request=replace(requests[0], nodes=len(requests) if gang else 1),
        jobs=len(requests),
        job_requests=requests,
    )


def test_jobs_of_groups_asking_for_different_resources_each_get_their_own_fit() -> None:
    room = Resources(cpu_millicores=16_000, memory_bytes=2**36)
    cpu = NodeInventory(name="c0", allocatable=room, free=room)
    inventory = GpuInventory(nodes=(*cluster(("a0", "A100", 8), ("h0", "H100", 8)).nodes, cpu))
    router = Request(cpu_millicores=4000)
    service = _mixed("pd", router, request(8, "H100"), request(2, "A100"), router)
    [admit] = plan(inventory, [service], []).admits
    assert [(p.node, p.gpus, p.cpu_milli) for p in admit.placements] == [
        ("c0", 0, 4000),
        ("h0", 8, 0),
        ("a0", 2, 0),
        ("c0", 0, 4000),  # the first one's CPUs are counted: 8 of 16 taken
    ]
    crowded = _mixed("crowd", *([router] * 5))  # 20 CPUs of 16: never all at once
    assert plan(inventory, [crowded], []).admits == []


def test_a_gang_of_mixed_groups_gets_distinct_nodes_all_or_none() -> None:
    inventory = cluster(("h0", "H100", 8), ("h1", "H100", 8), ("a0", "A100", 8))
    head, worker = request(1, "A100"), request(8, "H100")
    ray = _mixed("ray", head, worker, worker, gang=True)
    [admit] = plan(inventory, [ray], []).admits
    assert [p.node for p in admit.placements] == ["a0", "h0", "h1"]
    blocked = plan(inventory, [ray], [holding("h1", 1)])
    assert blocked.admits == [] and blocked.reservations == {}
    assert blocked.waits[0].cause.startswith("waiting for capacity: 1x A100 + 8x H100")


def test_a_mixed_run_fails_at_once_when_one_groups_request_is_impossible() -> None:
    inventory = cluster(("a0", "A100", 8))
    result = plan(inventory, [_mixed("x", request(1, "A100"), request(1, "H100"))], [])
    assert result.admits == [] and [f.run_id for f in result.fails] == ["x"]


def test_a_project_at_quota_waits_while_another_project_wants_that_model() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    quotas = {"main": {"A100": 4}, "other": {"A100": 12}}
    holdings = [holding("a0", 4, "main"), holding("a1", 8, "other")]
    runs = [run("mine", project="main", at=0), run("theirs", project="other", at=1)]

    result = plan(inventory, runs, holdings, quotas=quotas)

    assert admitted(result) == ["theirs"]
    mine = next(w for w in result.waits if w.run_id == "mine")
    assert mine.cause == "waiting for quota: main holds 4 of its 4 A100"


def test_idle_quota_is_borrowed_when_nobody_else_waits_and_given_back_when_they_do() -> None:
    inventory = cluster(("a0", "A100", 8))
    quotas = {"main": {"A100": 2}, "other": {"A100": 6}}

    lent = plan(
        inventory, [run(f"m{i}", project="main", at=i) for i in range(5)], [], quotas=quotas
    )
    assert admitted(lent) == [f"m{i}" for i in range(5)]
    assert [a.borrowed for a in lent.admits] == [False, False, True, True, True]

    # The owner arrives while main's borrowed runs fill the node: no preemption, but
    # each GPU main gives back goes to the owner, and main may not borrow again.
    holdings = [holding("a0", 1, "main") for _ in range(7)]  # one of main's 8 ended
    runs = [
        run("m8", project="main", at=8),
        *(run(f"o{i}", project="other", at=9 + i) for i in range(2)),
    ]
    back = plan(inventory, runs, holdings, quotas=quotas)
    assert admitted(back) == ["o0"]
    assert {w.run_id for w in back.waits} == {"m8", "o1"}
    holdings = [*holdings[:6], holding("a0", 1, "other")]  # another of main's ended
    assert admitted(plan(inventory, runs[:1] + runs[2:], holdings, quotas=quotas)) == ["o1"]


def test_runs_of_a_fleet_use_only_its_nodes() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    fleet_run = replace(run("f"), request=replace(request(1), allowed_nodes=frozenset({"a1"})))

    result = plan(inventory, [fleet_run], [holding("a1", 8)])

    assert result.admits == []
    assert plan(inventory, [fleet_run], []).admits[0].placements[0].node == "a1"


def test_free_gpus_go_to_the_project_furthest_below_its_share() -> None:
    inventory = cluster(("a0", "A100", 8), ("a1", "A100", 8))
    holdings = [holding("a0", 8, "main"), holding("a1", 2, "main")]
    runs = [run(f"m{i}", project="main", at=i) for i in range(6)]
    runs += [run(f"o{i}", project="other", at=10 + i) for i in range(6)]

    result = plan(inventory, runs, holdings)

    assert usage(result, holdings) == {"main": 10, "other": 6}
    assert all(a.project == "other" for a in result.admits)


# --- properties ------------------------------------------------------------------------

MODELS = ("A100", "H100")
_nodes = st.lists(
    st.tuples(st.sampled_from(MODELS), st.sampled_from([1, 2, 4, 8])), min_size=1, max_size=6
)
_runs = st.lists(
    st.tuples(
        st.sampled_from(["main", "other", "third"]),
        st.integers(0, 3),  # priority
        st.integers(0, 50),  # submitted at
        st.sampled_from([1, 1, 1, 2, 4, 8]),  # GPUs per job
        st.sampled_from(MODELS),
        st.sampled_from([1, 1, 1, 2, 3]),  # nodes
    ),
    max_size=30,
)


def _scenario(
    nodes: list[tuple[str, int]], held: list[int], specs: list[tuple[str, int, int, int, str, int]]
) -> tuple[GpuInventory, list[Holding], list[QueuedRun]]:
    inventory = cluster(*((f"n{i}", model, count) for i, (model, count) in enumerate(nodes)))
    holdings = [
        holding(f"n{i}", min(h, count), "main")
        for i, ((_, count), h) in enumerate(zip(nodes, held, strict=False))
        if min(h, count) > 0
    ]
    runs = [
        run(f"r{i}", gpus, model=model, project=p, priority=prio, at=at, nodes=n)
        for i, (p, prio, at, gpus, model, n) in enumerate(specs)
    ]
    return inventory, holdings, runs


@settings(max_examples=150, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), _runs)
def test_no_node_is_ever_promised_more_gpus_than_it_has(
    nodes: list[tuple[str, int]], held: list[int], specs: list[tuple[str, int, int, int, str, int]]
) -> None:
    inventory, holdings, runs = _scenario(nodes, held, specs)

    result = plan(inventory, runs, holdings)

    used = used_per_node(result, holdings)
    for node in inventory.nodes:
        assert used[node.name] <= node.allocatable.gpus[GPU]
    decided = [a.run_id for a in result.admits] + [w.run_id for w in result.waits]
    decided += [f.run_id for f in result.fails]
    assert sorted(decided) == sorted(r.run_id for r in runs)  # every run, exactly once


@settings(max_examples=150, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), _runs)
def test_gangs_get_distinct_nodes_and_every_job_a_place(
    nodes: list[tuple[str, int]], held: list[int], specs: list[tuple[str, int, int, int, str, int]]
) -> None:
    inventory, holdings, runs = _scenario(nodes, held, specs)
    by_id = {r.run_id: r for r in runs}

    for admit in plan(inventory, runs, holdings).admits:
        wanted = by_id[admit.run_id]
        assert len(admit.placements) == wanted.jobs
        assert len({p.node for p in admit.placements}) == wanted.jobs
        assert all(p.gpus == wanted.request.gpu_count for p in admit.placements)


@settings(max_examples=150, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), _runs)
def test_positions_number_each_projects_waiting_runs_in_priority_then_fifo_order(
    nodes: list[tuple[str, int]], held: list[int], specs: list[tuple[str, int, int, int, str, int]]
) -> None:
    inventory, holdings, runs = _scenario(nodes, held, specs)
    by_id = {r.run_id: r for r in runs}

    result = plan(inventory, runs, holdings)

    for project in {w.project for w in result.waits}:
        waits = sorted((w for w in result.waits if w.project == project), key=lambda w: w.position)
        assert [w.position for w in waits] == list(range(1, len(waits) + 1))
        assert all(w.queued == len(waits) for w in waits)
        keys = [queue_key(by_id[w.run_id]) for w in waits]
        assert keys == sorted(keys)


@settings(max_examples=150, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), st.data())
def test_same_sized_runs_of_one_project_start_strictly_in_queue_order(
    nodes: list[tuple[str, int]], held: list[int], data: st.DataObject
) -> None:
    gpus = data.draw(st.sampled_from([1, 2, 4]))
    specs = data.draw(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50)), min_size=1, max_size=25)
    )
    inventory, holdings, _ = _scenario(nodes, held, [])
    runs = [
        run(f"r{i}", gpus, model=MODELS[0], priority=p, at=at) for i, (p, at) in enumerate(specs)
    ]

    result = plan(inventory, runs, holdings)

    ordered = [r.run_id for r in sorted(runs, key=queue_key)]
    assert admitted(result) == ordered[: len(result.admits)]


@settings(max_examples=150, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), _runs)
def test_no_run_behind_a_blocked_run_takes_the_nodes_held_for_it(
    nodes: list[tuple[str, int]], held: list[int], specs: list[tuple[str, int, int, int, str, int]]
) -> None:
    # One project, so the pass considers runs in queue order.
    specs = [("main", *rest) for _, *rest in specs]  # type: ignore[misc]
    inventory, holdings, runs = _scenario(nodes, held, specs)
    by_id = {r.run_id: r for r in runs}

    result = plan(inventory, runs, holdings)

    for blocked, reserved in result.reservations.items():
        for admit in result.admits:
            if queue_key(by_id[admit.run_id]) > queue_key(by_id[blocked]):
                assert not {p.node for p in admit.placements} & set(reserved)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 6),  # nodes of 8 GPUs
    st.lists(st.integers(0, 8), min_size=3, max_size=3),  # what each project holds
    st.lists(st.integers(0, 40), min_size=3, max_size=3),  # how many 1-GPU runs each has queued
)
def test_fair_share_fills_the_poorest_project_first(
    node_count: int, held: list[int], demand: list[int]
) -> None:
    projects = ["a", "b", "c"]
    inventory = cluster(*((f"n{i}", "A100", 8) for i in range(node_count)))
    holdings: list[Holding] = []
    capacity = [8] * node_count
    for project, amount in zip(projects, held, strict=True):
        for _ in range(amount):
            node = next((i for i, c in enumerate(capacity) if c), None)
            if node is not None:
                capacity[node] -= 1
                holdings.append(holding(f"n{node}", 1, project))
    runs = [
        run(f"{p}{i}", project=p, at=i)
        for p, n in zip(projects, demand, strict=True)
        for i in range(n)
    ]

    result = plan(inventory, runs, holdings)

    final = usage(result, holdings)
    gained = Counter(a.project for a in result.admits)
    still_waiting = {w.project for w in result.waits}
    for winner in gained:
        # Before its last GPU, the winner held no more than any project left waiting.
        for loser in still_waiting:
            assert final[winner] - 1 <= final[loser]
    # Work-conserving: a waiting 1-GPU run means no GPU was left free.
    if still_waiting:
        assert sum(final.values()) == 8 * node_count


@settings(max_examples=150, deadline=None)
@given(_nodes, _runs, st.integers(0, 8), st.integers(0, 8))
def test_borrowing_never_happens_while_another_project_waits_with_quota_left(
    nodes: list[tuple[str, int]], specs: list[tuple[str, int, int, int, str, int]], qa: int, qb: int
) -> None:
    inventory, holdings, runs = _scenario(nodes, [], specs)
    quotas = {"main": {"A100": qa, "H100": qb}, "other": {"A100": qb, "H100": qa}}

    result = plan(inventory, runs, holdings, quotas=quotas)

    final: dict[tuple[str, str], int] = Counter()
    model_of = {n.name: n.gpus[0].name for n in inventory.nodes}
    for admit in result.admits:
        for p in admit.placements:
            final[(admit.project, str(model_of[p.node]))] += p.gpus
    by_id = {r.run_id: r for r in runs}
    for admit in result.admits:
        if not admit.borrowed:
            continue
        model = str(model_of[admit.placements[0].node])
        for wait in result.waits:
            wanted = by_id[wait.run_id].request.gpu_names
            if wait.project == admit.project or model.lower() not in wanted:
                continue
            limit = quotas.get(wait.project, {}).get(model)
            assert limit is not None and final[(wait.project, model)] >= limit


# --- time rules ------------------------------------------------------------------------


def _job(num: int, status: RunStatus, jobs_in_run: int = 2) -> Job:
    return Job(
        id=f"j{num}",
        run_id="r",
        project="main",
        run_name="r",
        job_num=num,
        jobs_in_run=jobs_in_run,
        status=status,
    )


def test_retry_covers_only_its_events_and_only_within_its_duration() -> None:
    limits = Limits(retry_on=frozenset({"error"}), retry_duration_s=60)

    assert may_retry(limits, "error", submitted_at=0, now=60)
    assert not may_retry(limits, "error", submitted_at=0, now=61)
    assert not may_retry(limits, "interruption", submitted_at=0, now=1)
    assert not may_retry(Limits(), "error", submitted_at=0, now=1)


def test_no_capacity_in_retry_bounds_how_long_a_run_waits() -> None:
    bounded = Limits(retry_on=frozenset({"no-capacity"}), retry_duration_s=120)

    assert waited_too_long(bounded, submitted_at=0, now=120) is None
    assert waited_too_long(bounded, submitted_at=0, now=121) == (
        "no capacity within the retry duration (120s)"
    )
    assert waited_too_long(Limits(), submitted_at=0, now=10**9) is None  # queues for ever


def test_max_duration_counts_from_placement_and_inactivity_only_stops_dev_environments() -> None:
    limits = Limits(max_duration_s=100, inactivity_s=30)

    assert time_is_up(limits, kind="task", admitted_at=None, active_at=None, now=500) is None
    assert time_is_up(limits, kind="task", admitted_at=1000, active_at=None, now=1029) is None
    assert time_is_up(limits, kind="task", admitted_at=1000, active_at=None, now=1101) == (
        "max_duration exceeded (100s)"
    )
    idle = time_is_up(limits, kind="dev-environment", admitted_at=1000, active_at=None, now=1031)
    assert idle == "inactive for longer than inactivity_duration (30s)"
    attached = time_is_up(
        limits, kind="dev-environment", admitted_at=1000, active_at=1020, now=1031
    )
    assert attached is None


def test_a_gang_goes_back_when_a_member_lost_its_place_or_is_not_running_in_time() -> None:
    S = RunStatus
    running = [_job(0, S.RUNNING), _job(1, S.RUNNING)]
    starting = [_job(0, S.RUNNING), _job(1, S.PROVISIONING)]
    split = [_job(0, S.RUNNING), _job(1, S.PENDING)]

    assert gang_not_ready(running, admitted_at=0, now=1000, timeout_s=10) is None
    assert gang_not_ready(starting, admitted_at=0, now=10, timeout_s=10) is None
    assert gang_not_ready(starting, admitted_at=0, now=11, timeout_s=10) == (
        "gang not ready: job 1 not Running within 10s"
    )
    assert (gang_not_ready(split, admitted_at=0, now=1, timeout_s=10) or "").startswith(
        "job 1 of the gang lost its placement"
    )
    single = [_job(0, S.PROVISIONING, jobs_in_run=1)]
    assert gang_not_ready(single, admitted_at=0, now=10**6, timeout_s=10) is None


# --- disk ----------------------------------------------------------------------------------

_GB = 1024**3


def _disk_node(name: str, disk_gb: int) -> GpuInventory:
    room = Resources(
        cpu_millicores=96_000,
        memory_bytes=2**40,
        ephemeral_storage_bytes=disk_gb * _GB,
        gpus={GPU: 8},
    )
    node = gpu_node(name).model_copy(update={"allocatable": room, "free": room})
    return GpuInventory(nodes=(node,))


def _disk_run(run_id: str, disk_gb: int, at: float) -> QueuedRun:
    return replace(run(run_id, at=at), request=replace(request(1), disk_bytes=disk_gb * _GB))


def test_a_pass_never_promises_a_nodes_disk_twice() -> None:
    inventory = _disk_node("d0", 300)
    result = plan(inventory, [_disk_run("a", 200, 1.0), _disk_run("b", 200, 2.0)], [])
    assert admitted(result) == ["a"]
    assert result.admits[0].placements[0].disk_bytes == 200 * _GB
    assert [w.run_id for w in result.waits] == ["b"]


def test_disk_held_by_a_placement_counts_until_its_pod_exists() -> None:
    inventory = _disk_node("d0", 300)
    held = Holding("main", Placement(node="d0", gpu_resource=GPU, gpus=1, disk_bytes=200 * _GB))
    assert admitted(plan(inventory, [_disk_run("b", 200, 1.0)], [held])) == []
    assert admitted(plan(inventory, [_disk_run("c", 100, 1.0)], [held])) == ["c"]
