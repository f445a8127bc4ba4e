"""The scheduling pass on a real Redis, with an inventory and a server config of its own.

No Berth processes run on this key prefix: the tests call the pass in-process
and read what it wrote, so quotas from the server config and races between
passes can be checked step by step. The Kubernetes cluster is never called
(the inventory is published by the test, and nothing consumes the provision
messages the pass sends).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cli.local.cluster import ClusterState
from shared import tasks
from shared.errors import TemporaryError
from shared.placement import placements
from shared.queueing import keys
from shared.queueing.commit import CONFLICT, FENCED, Change, Writer
from shared.settings import RedisSettings, Settings
from shared.state.inventory_store import CHANNEL
from tests.workers.worlds import NODES, forget_prefix, submit, two_a100_nodes
from workers import scheduling
from workers.context import WorkerContext, build_context

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Settings:
    config = tmp_path / "server" / "config.yml"
    config.parent.mkdir()
    backend = {"type": "kubernetes", "kubeconfig": {"filename": local_cluster.kubeconfig}}
    projects = [
        {"name": "main", "backends": [backend], "quotas": {"a100": 4}},
        {"name": "other", "backends": [backend], "quotas": {"A100": 12}},
    ]
    config.write_text(yaml.safe_dump({"projects": projects}))
    return Settings(
        home=tmp_path, redis=RedisSettings(url=local_cluster.redis_url, key_prefix=redis_prefix)
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[WorkerContext]:
    context = build_context(settings)
    key = context.clusters.key_for("main")
    context.store.publish_inventory(key, two_a100_nodes().to_json(), CHANNEL)
    try:
        yield context
    finally:
        forget_prefix(context, settings.redis.key_prefix)
        context.close()


def _held(ctx: WorkerContext) -> tuple[Counter[str], Counter[str]]:
    """GPUs held per node and per project, from the store."""
    per_node: Counter[str] = Counter()
    per_project: Counter[str] = Counter()
    for run, jobs in placements.active_runs(ctx.store):
        for job in jobs:
            if job.status in placements.HOLDING and job.placement is not None:
                per_node[job.placement.node] += job.placement.gpus
                per_project[run.project] += job.placement.gpus
    return per_node, per_project


def test_quotas_from_the_server_config_cap_a_project_while_another_waits(
    ctx: WorkerContext,
) -> None:
    for i in range(6):
        submit(ctx, f"m{i}", "A100:2")
    for i in range(6):
        submit(ctx, f"o{i}", "A100:2", project="other")

    scheduling.run_pass(ctx)

    _, per_project = _held(ctx)
    assert per_project == {"main": 4, "other": 12}
    waiting = ctx.store.run_by_name("main", "m2")
    assert waiting.status == "pending"
    assert waiting.reason == (
        "waiting for quota: main holds 4 of its 4 A100; position 1 of 4 in main's queue"
    )


def test_idle_quota_is_lent_when_nobody_else_waits(ctx: WorkerContext) -> None:
    for i in range(6):
        submit(ctx, f"m{i}", "A100:2")

    result = scheduling.run_pass(ctx)

    assert result.placed == [f"m{i}" for i in range(6)]
    events = ctx.store.events(ctx.store.run_by_name("main", "m5").id)
    assert any("borrowed quota" in e.message for _, e in events)


def test_passes_racing_without_the_lock_never_promise_a_gpu_twice(settings: Settings) -> None:
    contexts = [build_context(settings) for _ in range(3)]
    contexts[0].store.publish_inventory(
        contexts[0].clusters.key_for("main"), two_a100_nodes().to_json(), CHANNEL
    )
    fenced = 0
    try:
        for step in range(8):
            for i in range(3):
                submit(contexts[0], f"s{step}x{i}", f"A100:{1 + (step + i) % 3}", project="other")
            barrier = threading.Barrier(len(contexts))
            results: list[scheduling.PassResult] = []

            def one_pass(
                ctx: WorkerContext,
                barrier: threading.Barrier = barrier,
                results: list[scheduling.PassResult] = results,
            ) -> None:
                barrier.wait(timeout=10)
                # Losing the race five times is the designed "try again later".
                with contextlib.suppress(TemporaryError):
                    results.append(scheduling.run_pass(ctx))

            threads = [threading.Thread(target=one_pass, args=(c,)) for c in contexts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            fenced += sum(r.fenced for r in results)
            per_node, _ = _held(contexts[0])
            assert all(per_node[n] <= NODES[n] for n in per_node), f"step {step}: {per_node}"
        per_node, _ = _held(contexts[0])
        assert sum(per_node.values()) >= 12  # the passes did place work
        assert fenced > 0  # and they did collide: the fence, not luck, kept them apart
    finally:
        forget_prefix(contexts[0], settings.redis.key_prefix)
        for ctx in contexts:
            ctx.close()


def _messages(ctx: WorkerContext, queue: str) -> list[tuple[str, list[str]]]:
    """(task name, arguments) of each message waiting in ``queue``, oldest first."""
    key = f"{ctx.settings.redis.key_prefix}:celery:{queue}"
    out = []
    for raw in reversed(ctx.store.r.lrange(key, 0, -1)):  # kombu pushes on the left
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], args))
    return out


def test_a_pass_that_places_several_runs_sends_their_jobs_in_one_provisioning_message(
    ctx: WorkerContext,
) -> None:
    runs = [submit(ctx, f"b{i}", "A100:1", project="other") for i in range(5)]

    assert scheduling.run_pass(ctx).placed == [f"b{i}" for i in range(5)]

    jobs = [job_id for run in runs for job_id in run.job_ids]
    assert _messages(ctx, "provisioning") == [(tasks.PROVISION_JOBS, jobs)]
    for job_id in jobs:
        assert ctx.store.get_job(job_id).status == "provisioning"


def test_admissions_written_in_turn_keep_the_fence_and_skip_only_a_run_that_moved(
    ctx: WorkerContext,
) -> None:
    store = ctx.store
    runs = [submit(ctx, f"t{i}", "A100:1") for i in range(3)]
    writer, version = Writer(store), _capacity_version(ctx)
    changes = []
    for run in runs:
        moved = store.get_run(run.id).model_copy(update={"reason": "placed"})
        changes.append(Change(run=moved))
    # The middle run is written by someone else after the pass read it: a conflict.
    other = store.get_run(runs[1].id)
    assert store.save_run(other.model_copy(update={"reason": "stopped meanwhile"}))

    outcomes = writer.write_in_turn(changes, fence=version)

    assert outcomes == [version + 1, CONFLICT, version + 2]
    assert [store.get_run(r.id).reason for r in runs] == ["placed", "stopped meanwhile", "placed"]
    assert _capacity_version(ctx) == version + 2


def test_admissions_written_in_turn_after_capacity_moved_write_nothing(
    ctx: WorkerContext,
) -> None:
    store = ctx.store
    runs = [submit(ctx, f"f{i}", "A100:1") for i in range(2)]
    writer, version = Writer(store), _capacity_version(ctx)
    # Another pass placed something after this one read capacity.
    assert writer.write(Change(run=None, run_id="elsewhere"), fence=version) == version + 1
    changes = [Change(run=store.get_run(r.id).model_copy(update={"reason": "x"})) for r in runs]

    assert writer.write_in_turn(changes, fence=version) == [FENCED, FENCED]
    assert [store.get_run(r.id).reason for r in runs] == ["", ""]


def _capacity_version(ctx: WorkerContext) -> int:
    return int(ctx.store.r.get(keys.key(ctx.store, keys.CAPACITY_VERSION)) or 0)
