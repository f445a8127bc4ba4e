"""Quick passes (shared.queueing.heads): which runs a pass between full ones decides."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.queueing import Wait, plan
from shared.queueing.heads import QueueIndex, counted_whole, full_pass_due
from shared.queueing.order import queue_key
from shared.state.records import Job, Placement, Run, RunStatus
from tests.shared.test_queue import _nodes, _runs, _scenario


def _run(
    name: str,
    project: str = "main",
    *,
    status: RunStatus = RunStatus.PENDING,
    priority: int = 0,
    at: float = 0.0,
) -> Run:
    return Run(
        id=f"id-{name}",
        project=project,
        name=name,
        user="u",
        configuration={},
        configuration_type="task",
        status=status,
        priority=priority,
        submitted_at=at,
    )


def _index(runs: list[Run], jobs: dict[str, list[Job]] | None = None) -> QueueIndex:
    index = QueueIndex()
    for run in runs:
        index.update(run.id, run, (jobs or {}).get(run.id, []))
    return index


def test_each_projects_first_runs_in_queue_order_are_the_heads() -> None:
    main = [_run(f"m{i}", at=float(10 - i)) for i in range(6)]  # m5 is the oldest
    urgent = _run("urgent", priority=50, at=99.0)
    other = [_run(f"o{i}", "other", at=float(i)) for i in range(2)]
    running = _run("serving", status=RunStatus.RUNNING, at=0.5)

    heads = _index([*main, urgent, *other, running]).heads(3)

    # Priority first, then the oldest: urgent, m5, m4 are main's heads.
    assert heads.heads == {"id-urgent", "id-m5", "id-m4", "id-o0", "id-o1"}
    assert heads.cut == {"main": 4}  # "other" has 2, within its 3; running runs are not queued
    assert not heads.unseen  # every run left out was decided by a pass before


def test_the_index_follows_each_runs_changes() -> None:
    runs = [_run(f"m{i}", at=float(i)) for i in range(4)]
    index = _index(runs)
    assert index.heads(2).heads == {"id-m0", "id-m1"}
    assert set(index.queued()) == {"id-m0", "id-m1", "id-m2", "id-m3"}
    # m0 is admitted, m1 is stopped and gone, m3 is raised to the front.
    index.update("id-m0", runs[0].model_copy(update={"status": RunStatus.PROVISIONING}), [])
    index.update("id-m1", None, ())
    index.update("id-m3", runs[3].model_copy(update={"priority": 9}), [])
    index.update("id-m3", runs[3].model_copy(update={"priority": 9}), [])  # twice: no harm

    heads = index.heads(1)
    assert heads.heads == {"id-m3"} and heads.cut == {"main": 1}
    assert set(index.queued()) == {"id-m2", "id-m3"}
    index.clear()
    assert index.heads(1).cut == {}


def test_a_run_left_out_that_no_pass_has_seen_is_flagged() -> None:
    runs = [_run(f"m{i}", at=float(i)) for i in range(4)]
    runs.append(_run("new", status=RunStatus.SUBMITTED, at=9.0))
    assert _index(runs).heads(2).unseen
    # The same run among the heads is decided by the quick pass itself.
    runs[-1] = _run("new", status=RunStatus.SUBMITTED, at=-1.0)
    assert not _index(runs).heads(2).unseen


def test_a_queue_no_deeper_than_the_heads_is_decided_whole() -> None:
    heads = _index([_run(f"m{i}") for i in range(3)]).heads(3)
    assert heads.cut == {} and heads.heads == {"id-m0", "id-m1", "id-m2"}
    # Then the pass is a full one, whenever the last full pass was.
    assert full_pass_due(heads, last_full_at=100.0, now=100.0, every_s=5, first_decision_s=1)
    assert full_pass_due(None, last_full_at=100.0, now=100.0, every_s=5, first_decision_s=1)


def test_a_full_pass_is_due_every_full_pass_every_s_and_sooner_for_an_unseen_run() -> None:
    deep = _index([_run(f"m{i}", at=float(i)) for i in range(5)]).heads(2)
    assert not full_pass_due(deep, last_full_at=100.0, now=104.9, every_s=5, first_decision_s=1)
    assert full_pass_due(deep, last_full_at=100.0, now=105.0, every_s=5, first_decision_s=1)
    assert full_pass_due(deep, last_full_at=float("-inf"), now=0.0, every_s=5, first_decision_s=1)
    runs = [_run(f"m{i}", at=float(i)) for i in range(5)]
    runs.append(_run("new", status=RunStatus.SUBMITTED, at=9.0))
    unseen = _index(runs).heads(2)
    assert not full_pass_due(unseen, last_full_at=100.0, now=100.5, every_s=5, first_decision_s=1)
    assert full_pass_due(unseen, last_full_at=100.0, now=101.0, every_s=5, first_decision_s=1)


def test_a_head_runs_place_counts_the_runs_left_out() -> None:
    waits = [
        Wait("a", "main", "waiting for capacity", 1, 2),
        Wait("b", "other", "waiting for capacity", 1, 1),
        Wait("c", "main", "its volume is in use", 0, 0),  # not in the queue: no count
    ]
    assert counted_whole(waits, {"main": 40}) == [
        Wait("a", "main", "waiting for capacity", 1, 42),
        waits[1],
        waits[2],
    ]
    assert counted_whole(waits, {}) is waits


# test_queue's runs, all in one project (across projects the fair share interleaves them).
_one_project = _runs.map(lambda specs: [("main", *spec[1:]) for spec in specs])


@settings(max_examples=200, deadline=None)
@given(_nodes, st.lists(st.integers(0, 8), max_size=6), _one_project, st.integers(1, 12))
def test_the_heads_alone_get_the_same_decisions_as_in_the_whole_queue(
    nodes: list[tuple[str, int]],
    held: list[int],
    specs: list[tuple[str, int, int, int, str, int]],
    per_project: int,
) -> None:
    """What a quick pass relies on: the planner takes a project's runs in queue order,
    so over the first ``per_project`` alone it admits, fails and reserves exactly as it
    does for them in the whole queue, places included."""
    inventory, holdings, runs = _scenario(nodes, held, specs)
    head = sorted(runs, key=queue_key)[:per_project]
    ids = {r.run_id for r in head}

    whole = plan(inventory, runs, holdings)
    quick = plan(inventory, head, holdings)

    assert quick.admits == [a for a in whole.admits if a.run_id in ids]
    assert quick.fails == [f for f in whole.fails if f.run_id in ids]
    assert [(w.run_id, w.cause, w.position) for w in quick.waits] == [
        (w.run_id, w.cause, w.position) for w in whole.waits if w.run_id in ids
    ]


def test_a_queued_run_whose_job_still_holds_a_node_is_never_left_out() -> None:
    """A gang sent back to the queue while one of its pods is deleted: the node that
    job holds must count in every pass, or a quick pass could promise it twice."""
    runs = [_run(f"m{i}", at=float(i)) for i in range(4)]
    holding = Job(
        id="j",
        run_id="id-m3",
        project="main",
        run_name="m3",
        status=RunStatus.TERMINATING,
        placement=Placement(node="a0", gpu_resource="nvidia.com/gpu", gpus=8),
    )
    index = _index(runs, {"id-m3": [holding]})
    assert index.heads(2).heads == {"id-m0", "id-m1"} and index.heads(2).cut == {"main": 1}
    assert "id-m3" not in index.queued()  # so it is in every view, quick passes' too
