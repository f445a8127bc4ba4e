"""Quick passes on real Redis: between full passes, only the heads of deep queues.

The pass called in-process (as in test_scheduling): two nodes of 8 A100; runs of 8
hold both, and more wait in FIFO order. ``head_runs`` = ``exact_positions`` = 2, so
a queue deeper than 2 is cut after its first two runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from cli.local.cluster import ClusterState
from shared.queueing import positions
from shared.queueing.commit import Change, Writer
from shared.settings import RedisSettings, SchedulingSettings, Settings
from shared.state.inventory_store import CHANNEL
from shared.state.records import RunStatus
from tests.workers.worlds import forget_prefix, submit, two_a100_nodes
from workers import scheduling
from workers.context import WorkerContext, build_context

pytestmark = pytest.mark.integration

WAITING = [f"w{i}" for i in range(6)]


@pytest.fixture
def make(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[object]:
    made: list[WorkerContext] = []

    def build(*, every_s: float = 3600.0, first_decision_s: float = 3600.0) -> WorkerContext:
        home = tmp_path / f"home{len(made)}"
        config = home / "server" / "config.yml"
        config.parent.mkdir(parents=True)
        backend = {"type": "kubernetes", "kubeconfig": {"filename": local_cluster.kubeconfig}}
        config.write_text(yaml.safe_dump({"projects": [{"name": "main", "backends": [backend]}]}))
        settings = Settings(
            home=home,
            redis=RedisSettings(url=local_cluster.redis_url, key_prefix=redis_prefix),
            scheduling=SchedulingSettings(
                exact_positions=2,
                head_runs=2,
                full_pass_every_s=every_s,
                first_decision_s=first_decision_s,
                position_refresh_s=0.001,
                max_reservations=0,
            ),
        )
        ctx = build_context(settings)
        inventory = two_a100_nodes().to_json()
        ctx.store.publish_inventory(ctx.clusters.key_for("main"), inventory, CHANNEL)
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        forget_prefix(ctx, redis_prefix)
        ctx.close()


def _queue(ctx: WorkerContext) -> str:
    """Both nodes held, six runs waiting, decided by a first (full) pass; their cause."""
    for name in ("held0", "held1", *WAITING):
        submit(ctx, name, "A100:8")
    first = scheduling.run_pass(ctx)
    assert first.placed == ["held0", "held1"] and first.left_out == 0
    cause = ctx.store.run_by_name("main", "w5").reason
    assert cause and "position" not in cause
    return cause


def _end(ctx: WorkerContext, name: str) -> None:
    """What sync_job writes when the run's pod succeeded: its GPUs are free again."""
    run = ctx.store.run_by_name("main", name)
    jobs = [j.model_copy(update={"status": RunStatus.DONE}) for j in ctx.store.jobs_of(run)]
    Writer(ctx.store).write(
        Change(run=run.model_copy(update={"status": RunStatus.DONE}), jobs=jobs)
    )


def test_a_quick_pass_hands_freed_gpus_to_the_head_and_leaves_the_rest_untouched(
    make: object,
) -> None:
    ctx = make()  # type: ignore[operator]
    cause = _queue(ctx)
    before = {n: ctx.store.run_by_name("main", n) for n in WAITING}
    shown_before = positions.shown(ctx.store, [before["w5"]])[0].reason

    _end(ctx, "held0")
    quick = scheduling.run_pass(ctx)

    assert quick.placed == ["w0"]
    assert quick.left_out == 4 and quick.waiting == 5  # w0, w1 decided; w2-w5 left out
    assert quick.repeat_share == 0.5  # of the two it decided, w1 waits again
    after = {n: ctx.store.run_by_name("main", n) for n in WAITING}
    assert after["w0"].status == RunStatus.PROVISIONING
    # The head's place counts the whole queue, as a full pass writes it.
    assert after["w1"].reason == f"{cause}; position 1 of 5 in main's queue"
    # Past the heads: not a write (w2's place, now 2 of 5, goes into its reason at the
    # next full pass), and the published deep places stay the full pass's.
    assert [after[n].version for n in ("w2", "w3", "w4", "w5")] == [
        before[n].version for n in ("w2", "w3", "w4", "w5")
    ]
    assert positions.shown(ctx.store, [after["w5"]])[0].reason == shown_before


def _passes(kind: str) -> float:
    return REGISTRY.get_sample_value("berth_scheduling_pass_seconds_count", {"kind": kind}) or 0


def test_the_next_full_pass_decides_every_run_again(make: object) -> None:
    ctx = make(every_s=0.2)  # type: ignore[operator]
    cause = _queue(ctx)
    _end(ctx, "held0")
    quick_before, full_before = _passes("quick"), _passes("full")
    assert scheduling.run_pass(ctx).left_out == 4  # within every_s of the first pass
    time.sleep(0.3)

    full = scheduling.run_pass(ctx)

    # Each pass is counted by its kind (berth_scheduling_pass_seconds, for operators).
    assert (_passes("quick"), _passes("full")) == (quick_before + 1, full_before + 1)

    assert full.left_out == 0 and full.waiting == 5 and full.placed == []
    assert full.repeat_share == 1.0  # all its time went on runs that wait again
    w5 = ctx.store.run_by_name("main", "w5")
    assert positions.shown(ctx.store, [w5])[0].reason == (
        f"{cause}; position 5 of 5 in main's queue"
    )


def test_a_submission_past_the_heads_waits_for_a_full_pass_within_first_decision_s(
    make: object,
) -> None:
    patient = make()  # type: ignore[operator]
    _queue(patient)
    # Impossible anywhere (two nodes of 8): fails as soon as a pass decides it.
    submit(patient, "huge", "A100:16")
    quick = scheduling.run_pass(patient)
    assert quick.left_out == 5 and quick.failed == []
    assert patient.store.run_by_name("main", "huge").status == RunStatus.SUBMITTED

    # The same queue, read by a process whose first_decision_s is 0: a full pass at once.
    eager = make(first_decision_s=0.0)  # type: ignore[operator]
    scheduling.run_pass(eager)  # its first pass is full anyway: no full pass seen yet
    submit(eager, "huge2", "A100:16")
    decided = scheduling.run_pass(eager)

    assert decided.left_out == 0 and decided.failed == ["huge2"]
    assert eager.store.run_by_name("main", "huge2").status == RunStatus.FAILED


def test_a_queue_no_deeper_than_the_heads_always_gets_full_passes(make: object) -> None:
    ctx = make()  # type: ignore[operator]
    for name in ("held0", "held1", "w0", "w1"):
        submit(ctx, name, "A100:8")
    scheduling.run_pass(ctx)
    submit(ctx, "huge", "A100:16")  # now three wait: one past the heads
    assert scheduling.run_pass(ctx).left_out == 1
    _end(ctx, "held0")
    _end(ctx, "held1")

    quick = scheduling.run_pass(ctx)  # the heads w0 and w1 start; "huge" is left out
    assert quick.placed == ["w0", "w1"] and quick.left_out == 1 and quick.failed == []

    result = scheduling.run_pass(ctx)  # only "huge" waits: within the heads, so full

    assert result.left_out == 0 and result.failed == ["huge"]


def test_a_quick_pass_that_starts_all_its_heads_asks_for_the_next_at_once(
    make: object,
) -> None:
    """A burst deeper than the heads onto free capacity: each quick pass starts its
    heads and asks for another (``again_in_s`` 0), so the runs past them do not wait
    for a full pass or a request."""
    ctx = make()  # type: ignore[operator]
    submit(ctx, "held0", "A100:8")
    assert scheduling.run_pass(ctx).placed == ["held0"]  # the process's full pass
    for i in range(5):
        submit(ctx, f"s{i}", "A100:1")  # a0 is free: all five fit

    first = scheduling.run_pass(ctx)
    assert first.placed == ["s0", "s1"] and first.left_out == 3 and first.again_in_s == 0.0
    # Every run it decided, it started: none of its time counts against the share.
    assert first.repeat_share == 0.0
    second = scheduling.run_pass(ctx)
    assert second.placed == ["s2", "s3"] and second.again_in_s == 0.0
    last = scheduling.run_pass(ctx)  # one left: within the heads, a full pass
    assert last.placed == ["s4"] and last.left_out == 0 and last.again_in_s is None


def test_a_quick_pass_that_left_out_an_undecided_run_asks_for_the_full_pass(
    make: object,
) -> None:
    ctx = make(first_decision_s=30.0)  # type: ignore[operator]
    _queue(ctx)
    submit(ctx, "late", "A100:8")

    quick = scheduling.run_pass(ctx)  # the heads wait: nothing drained

    assert quick.left_out == 5 and quick.placed == []
    assert quick.again_in_s is not None and 25.0 < quick.again_in_s <= 30.0
    blocked = make()  # type: ignore[operator]
    scheduling.run_pass(blocked)  # its own first (full) pass
    assert scheduling.run_pass(blocked).again_in_s is None  # nothing undecided left out
