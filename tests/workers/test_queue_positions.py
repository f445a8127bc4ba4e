"""Queue places: near the front written into the run's reason, deeper ones published apart.

Real Redis, the pass called in-process (as in test_scheduling): two runs of 8 A100
hold both nodes, and five more wait in FIFO order (no node is held for any: one
cause for all).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cli.local.cluster import ClusterState
from shared.queueing import positions
from shared.settings import RedisSettings, SchedulingSettings, Settings
from shared.state.inventory_store import CHANNEL
from shared.state.records import Run, RunStatus
from tests.workers.worlds import forget_prefix, submit, two_a100_nodes
from workers import scheduling
from workers.context import WorkerContext, build_context

pytestmark = pytest.mark.integration

WAITING = [f"w{i}" for i in range(5)]


def _context(cluster: ClusterState, prefix: str, home: Path, refresh_s: float) -> WorkerContext:
    config = home / "server" / "config.yml"
    config.parent.mkdir(exist_ok=True)
    backend = {"type": "kubernetes", "kubeconfig": {"filename": cluster.kubeconfig}}
    projects = [{"name": "main", "backends": [backend]}]
    config.write_text(yaml.safe_dump({"projects": projects}))
    settings = Settings(
        home=home,
        redis=RedisSettings(url=cluster.redis_url, key_prefix=prefix),
        scheduling=SchedulingSettings(
            exact_positions=2, position_refresh_s=refresh_s, max_reservations=0
        ),
    )
    ctx = build_context(settings)
    ctx.store.publish_inventory(ctx.clusters.key_for("main"), two_a100_nodes().to_json(), CHANNEL)
    return ctx


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    context = _context(local_cluster, redis_prefix, tmp_path, refresh_s=0.001)
    try:
        yield context
    finally:
        forget_prefix(context, redis_prefix)
        context.close()


def _queue(ctx: WorkerContext) -> str:
    """Fill the cluster and queue five runs; what they wait for."""
    for name in ("held0", "held1", *WAITING):
        submit(ctx, name, "A100:8")
    assert scheduling.run_pass(ctx).placed == ["held0", "held1"]
    cause = ctx.store.run_by_name("main", "w4").reason
    assert cause and "position" not in cause
    return cause


def _stored(ctx: WorkerContext) -> dict[str, Run]:
    return {name: ctx.store.run_by_name("main", name) for name in WAITING}


def _shown(ctx: WorkerContext) -> dict[str, str]:
    stored = _stored(ctx)
    shown = positions.shown(ctx.store, list(stored.values()))
    return {run.name: run.reason for run in shown}


def test_the_front_of_the_queue_is_in_the_record_and_the_rest_is_joined_when_shown(
    ctx: WorkerContext,
) -> None:
    cause = _queue(ctx)
    stored = _stored(ctx)
    assert {r.status for r in stored.values()} == {RunStatus.PENDING}
    # Past exact_positions (2) the record says only what the run waits for.
    assert [stored[n].reason for n in WAITING] == [
        f"{cause}; position 1 of 5 in main's queue",
        f"{cause}; position 2 of 5 in main's queue",
        cause,
        cause,
        cause,
    ]
    assert list(_shown(ctx).values()) == [
        f"{cause}; position {i} of 5 in main's queue" for i in range(1, 6)
    ]


def test_a_shift_deep_in_the_queue_is_published_without_writing_the_records(
    ctx: WorkerContext,
) -> None:
    cause = _queue(ctx)
    versions = {n: r.version for n, r in _stored(ctx).items()}
    # The head of the queue leaves it (stopped): every place behind it moves up one.
    head = ctx.store.run_by_name("main", "w0")
    head.status = RunStatus.TERMINATED
    assert ctx.store.save_run(head)
    scheduling.run_pass(ctx)

    stored = _stored(ctx)
    assert stored["w2"].reason == f"{cause}; position 2 of 4 in main's queue"  # now near the front
    assert stored["w2"].version > versions["w2"]
    # The deep ones' records were not written at all; their new places are shown.
    assert [stored[n].version for n in ("w3", "w4")] == [versions["w3"], versions["w4"]]
    shown = _shown(ctx)
    assert [shown[n] for n in ("w1", "w2", "w3", "w4")] == [
        f"{cause}; position {i} of 4 in main's queue" for i in range(1, 5)
    ]


def test_places_are_published_at_most_every_position_refresh_s(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> None:
    ctx = _context(local_cluster, redis_prefix, tmp_path, refresh_s=3600)
    try:
        cause = _queue(ctx)  # the first pass of a process publishes
        assert _shown(ctx)["w4"] == f"{cause}; position 5 of 5 in main's queue"
        head = ctx.store.run_by_name("main", "w0")
        head.status = RunStatus.TERMINATED
        assert ctx.store.save_run(head)
        scheduling.run_pass(ctx)
        # Not due yet: the place shown is the last one published, written nowhere else.
        assert _shown(ctx)["w4"] == f"{cause}; position 5 of 5 in main's queue"
    finally:
        forget_prefix(ctx, redis_prefix)
        ctx.close()


def test_places_near_the_front_are_written_at_most_every_position_refresh_s(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> None:
    """At depth passes come many times a second and each admission moves every place:
    rewriting the front's reasons each time cost a record write per run per pass."""
    ctx = _context(local_cluster, redis_prefix, tmp_path, refresh_s=3600)
    try:
        cause = _queue(ctx)  # the first pass of a process writes the places
        w1 = ctx.store.run_by_name("main", "w1")
        assert w1.reason == f"{cause}; position 2 of 5 in main's queue"
        head = ctx.store.run_by_name("main", "w0")
        head.status = RunStatus.TERMINATED
        assert ctx.store.save_run(head)
        submit(ctx, "late", "A100:8")

        scheduling.run_pass(ctx)

        # w1 is now first, but its place is not due for a write: the record is untouched.
        again = ctx.store.run_by_name("main", "w1")
        assert again.version == w1.version and again.reason == w1.reason
        # A run whose state moves is written at once (submitted -> pending, with its cause).
        late = ctx.store.run_by_name("main", "late")
        assert late.status == RunStatus.PENDING and late.reason == cause
    finally:
        forget_prefix(ctx, redis_prefix)
        ctx.close()


def test_a_publication_replaces_the_last_one_whole_and_expires_on_its_own(
    ctx: WorkerContext,
) -> None:
    waiting = [
        Run(
            id=i,
            project="main",
            name=i,
            user="u",
            configuration={},
            configuration_type="task",
            status=RunStatus.PENDING,
            reason="waiting",
        )
        for i in ("a", "ab", "b")
    ]
    positions.publish(ctx.store, {"ab": (60, 70), "b": (61, 70), "a": (62, 70)}, every_s=5)
    positions.publish(ctx.store, {"b": (60, 69), "ab": (61, 69)}, every_s=5)
    # "a" left the deep queue: no place, not the one of the run whose id it begins.
    assert [r.reason for r in positions.shown(ctx.store, waiting)] == [
        "waiting",
        "waiting; position 61 of 69 in main's queue",
        "waiting; position 60 of 69 in main's queue",
    ]
    assert 0 < ctx.store.r.ttl(ctx.store.key("queue", positions.POSITIONS)) <= 60
