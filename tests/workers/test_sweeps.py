"""Beat's sweep on a real Redis: safety-net resends never pile up in the queue.

With workers dead, a sweep every 5 s used to add one sync message per running
job each time (31,912 queued after 100 worker kills in bench/faults.py). Now a
resend is skipped while an identical one still waits, and sent again once a
worker has started that one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from api.services.runs import stop_run
from cli.local.cluster import ClusterState
from shared import tasks
from shared.placement.autoscaling import is_pool_node
from shared.queueing import keys
from shared.settings import SchedulingSettings
from shared.state.records import Event, RunStatus
from tests.workers.worlds import backend, submit, worker_context
from workers import pod_follow, provisioning, scheduling, sweeps
from workers import tasks as worker_tasks
from workers.celery_app import SWEEP_EVERY_S
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


def _queued(ctx: WorkerContext, queue: str) -> list[str]:
    """Task names waiting in ``queue`` (Celery's Redis list under Berth's key prefix)."""
    key = f"{ctx.settings.redis.key_prefix}:celery:{queue}"
    return [json.loads(raw)["headers"]["task"] for raw in ctx.store.r.lrange(key, 0, -1)]


def test_sweeps_queue_one_sync_per_running_job_until_a_worker_starts_it(
    ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = submit(ctx, "r0", "A100:2")
    assert scheduling.run_pass(ctx).placed == ["r0"]
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:provisioning")
    job = ctx.store.get_job(run.job_ids[0])
    job.pod_name = "berth-main-r0-0-0"
    assert ctx.store.save_job(job, Event(at=time.time(), kind="status", message="pod created"))

    for _ in range(5):  # five sweeps with no worker alive
        sweeps.sweep(ctx)
    assert _queued(ctx, "provisioning") == [tasks.SYNC_JOB]

    # A worker starts that message: the Celery task itself, with only the sync stubbed.
    monkeypatch.setattr(worker_tasks, "context", lambda: ctx)
    monkeypatch.setattr(provisioning, "sync_job", lambda _ctx, _job_id: None)
    cast(Any, worker_tasks.sync_job).run(job.id)  # the task's body, as a worker runs it
    sweeps.sweep(ctx)
    sweeps.sweep(ctx)
    assert _queued(ctx, "provisioning") == [tasks.SYNC_JOB, tasks.SYNC_JOB]


def test_a_stops_teardowns_are_not_sent_again_by_sweeps_while_they_wait(
    ctx: WorkerContext,
) -> None:
    run = submit(ctx, "r-stop", "A100:2")
    scheduling.run_pass(ctx)
    for queue in ("provisioning", "teardown"):
        ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:{queue}")
    stop_run(ctx.store, ctx.celery, ctx.store.get_run(run.id), abort=False)
    assert _queued(ctx, "teardown") == [tasks.TEARDOWN_PENDING]  # the drainer's

    for _ in range(3):  # the worker is busy elsewhere: the job waits in the set
        sweeps.sweep(ctx)
    assert _queued(ctx, "teardown") == [tasks.TEARDOWN_PENDING]


def test_a_resend_presumed_lost_is_sent_again_after_its_hold(ctx: WorkerContext) -> None:
    run = submit(ctx, "r1", "A100:2")
    scheduling.run_pass(ctx)
    job = ctx.store.get_job(run.job_ids[0])
    job.pod_name = "berth-main-r1-0-0"
    assert ctx.store.save_job(job, Event(at=time.time(), kind="status", message="pod created"))
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:provisioning")

    sweeps.sweep(ctx)
    marker = ctx.store.key("queued", tasks.SYNC_JOB, job.id)
    assert 0 < ctx.store.r.ttl(marker) <= tasks.RESEND_HOLD_S
    ctx.store.r.delete(f"{ctx.settings.redis.key_prefix}:celery:provisioning")  # lost
    ctx.store.r.delete(marker)  # what its TTL does after RESEND_HOLD_S

    sweeps.sweep(ctx)
    assert _queued(ctx, "provisioning") == [tasks.SYNC_JOB]


def test_while_pods_are_followed_each_job_is_resynced_about_once_a_minute(
    ctx: WorkerContext,
) -> None:
    runs = [submit(ctx, f"f{i}", "A100:1") for i in range(12)]
    scheduling.run_pass(ctx)
    jobs = [ctx.store.get_job(run.job_ids[0]) for run in runs]
    for job in jobs:
        job.pod_name = f"berth-main-{job.run_name}-0-0"
        assert ctx.store.save_job(job, Event(at=time.time(), kind="status", message="pod"))
    queue = f"{ctx.settings.redis.key_prefix}:celery:provisioning"
    ctx.store.r.delete(queue)

    # No proxy worker follows pods: every placed job is read again at every sweep.
    sweeps.sweep(ctx)
    assert _queued(ctx, "provisioning").count(tasks.SYNC_JOB) == len(jobs)

    # One does: over a minute of sweeps each job comes up once, a few per sweep.
    pod_follow.mark_following(ctx.store)
    ctx.store.r.delete(queue)
    for job in jobs:
        ctx.store.unmark_queued(tasks.SYNC_JOB, job.id)
    now = time.time()
    per_sweep = []
    for i in range(int(sweeps.FOLLOWED_SYNC_EVERY_S // SWEEP_EVERY_S)):
        at = now + i * SWEEP_EVERY_S
        wanted = [
            (name, job_id)
            for run in ctx.store.active_runs("main")
            for name, job_id in sweeps._resends(
                run, ctx.store.jobs_of(run), at, following=pod_follow.is_following(ctx.store)
            )
        ]
        per_sweep.append(sorted(job_id for name, job_id in wanted if name == tasks.SYNC_JOB))
    synced = [job_id for ids in per_sweep for job_id in ids]
    assert sorted(synced) == sorted(job.id for job in jobs)  # each exactly once
    assert max(len(ids) for ids in per_sweep) < len(jobs)

    # The proxy worker stops (or dies, and its word lapses): every sweep again.
    pod_follow.stop_following(ctx.store)
    sweeps.sweep(ctx)
    assert _queued(ctx, "provisioning").count(tasks.SYNC_JOB) == len(jobs)


@pytest.fixture
def pool_ctx(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> Iterator[WorkerContext]:
    """Project ``main`` with two A100 nodes and a pool that may add two L40S nodes.

    The gang deadline is 1 s; the pool's autoscaler may take 600 s.
    """
    pool = {
        "name": "grow",
        "gpu": "L40S",
        "gpus_per_node": 4,
        "max_nodes": 2,
        "labels": {"pool.example.com/name": f"grow-{redis_prefix}"},
        "cpu": 48,
        "memory": "384GB",
        "scale_up_timeout": 600,
    }
    main = {"name": "main", "backends": [backend(local_cluster.kubeconfig, node_pools=[pool])]}
    with worker_context(
        local_cluster.redis_url,
        redis_prefix,
        tmp_path,
        [main],
        scheduling=SchedulingSettings(gang_ready_timeout_s=1),
    ) as context:
        yield context


def test_a_gang_waiting_for_a_pool_gets_the_pools_time_not_just_the_gangs(
    pool_ctx: WorkerContext,
) -> None:
    ctx = pool_ctx
    on_pool = submit(ctx, "grows", "L40S:4", nodes=2)
    on_nodes = submit(ctx, "fixed", "A100:8", nodes=2)
    assert sorted(scheduling.run_pass(ctx).placed) == ["fixed", "grows"]
    jobs = ctx.store.jobs_of(ctx.store.get_run(on_pool.id))
    nodes = {j.placement.node for j in jobs if j.placement is not None}
    assert len(nodes) == 2 and all(is_pool_node(n) for n in nodes), nodes
    late = repr(time.time() - 5)  # both gangs placed 5 s ago, none of their pods Running
    for run in (on_pool, on_nodes):
        ctx.store.r.hset(keys.key(ctx.store, keys.ADMITTED), run.id, late)

    sweeps.sweep(ctx)

    requeued = ctx.store.get_run(on_nodes.id)
    assert requeued.status == RunStatus.PENDING
    assert "gang not ready: job 0 not Running within 1s" in requeued.reason
    waiting = ctx.store.get_run(on_pool.id)
    assert waiting.status == RunStatus.PROVISIONING  # 1 s + the pool's 600 s

    # The autoscaler's nodes join now (as workers.node_pools records it): the gang
    # gets its own deadline afresh from here, not from its placement 5 s ago.
    for job in ctx.store.jobs_of(waiting):
        assert job.placement is not None
        job.placement = job.placement.model_copy(
            update={"node": f"kwok-new-{job.job_num}", "joined_at": time.time()}
        )
        assert ctx.store.save_job(job)
    sweeps.sweep(ctx)
    assert ctx.store.get_run(on_pool.id).status == RunStatus.PROVISIONING

    joined_long_ago = time.time() - 3
    for job in ctx.store.jobs_of(ctx.store.get_run(on_pool.id)):
        assert job.placement is not None
        job.placement = job.placement.model_copy(update={"joined_at": joined_long_ago})
        assert ctx.store.save_job(job)
    sweeps.sweep(ctx)
    late_gang = ctx.store.get_run(on_pool.id)
    assert late_gang.status == RunStatus.PENDING
    assert "gang not ready: job 0 not Running within 1s" in late_gang.reason


def test_a_run_whose_own_write_was_lost_follows_its_ended_jobs_at_the_next_sweep(
    ctx: WorkerContext,
) -> None:
    # A failover can drop the run's write and keep its job's (a reliability run left 19
    # runs "provisioning" with their jobs done): nothing else looks at such a run again.
    run = submit(ctx, "lost", "A100:2")
    assert scheduling.run_pass(ctx).placed == ["lost"]
    job = ctx.store.get_job(run.job_ids[0])
    job.pod_name, job.status = "berth-main-lost-0-0", RunStatus.DONE
    assert ctx.store.save_job(job, Event(at=time.time(), kind="status", message="job 0 done"))
    assert ctx.store.get_run(run.id).status == RunStatus.PROVISIONING  # its run never told
    sweeps.sweep(ctx)
    assert ctx.store.get_run(run.id).status == RunStatus.DONE
