"""The dashboard's data on a real Redis: who holds which GPU, the queue, the usage samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.dashboard.state import ANOTHER_PROJECT, dashboard_state
from cli.local.cluster import ClusterState
from shared.state import usage
from shared.state.records import Placement, Project, RunStatus, User
from tests.workers.worlds import GPU, backend, submit, worker_context
from workers.context import WorkerContext
from workers.usage import sample_usage

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    projects: list[dict[str, Any]] = [
        {"name": name, "backends": [backend(local_cluster.kubeconfig)]} for name in ("main", "lab")
    ]
    projects[0]["quotas"] = {"A100": 12}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, projects) as context:
        yield context


def _place(ctx: WorkerContext, project: str, name: str, node: str, gpus: int) -> None:
    run = submit(ctx, name, f"A100:{gpus}", project=project)
    job = ctx.store.jobs_of(run)[0]
    job.status = RunStatus.RUNNING
    job.placement = Placement(node=node, gpu_resource=GPU, gpus=gpus)
    ctx.store.save_job(job)
    run.status = RunStatus.RUNNING
    ctx.store.save_run(run)


def test_the_map_names_a_members_own_runs_and_hides_another_projects(ctx: WorkerContext) -> None:
    ctx.store.put_project(Project(name="main", members=["alice"]))
    ctx.store.put_project(Project(name="lab", members=["bob"]))
    _place(ctx, "main", "alice-train", "a0", 2)
    _place(ctx, "lab", "bob-secret", "a0", 3)
    waiting = submit(ctx, "alice-next", "A100:8")
    waiting.status, waiting.reason = RunStatus.PENDING, "waiting: position 1 of 1 in main's queue"
    ctx.store.save_run(waiting)

    state = dashboard_state(ctx.store, ctx.clusters, User(name="alice", token_sha256="0" * 64))

    assert [p["name"] for p in state["projects"]] == ["main"]
    main = state["projects"][0]
    a0 = next(n for n in main["nodes"] if n["name"] == "a0")
    holders = a0["groups"][0]["gpus"]
    assert holders.count("alice-train (tester)") == 2
    assert holders.count(ANOTHER_PROJECT) == 3
    assert holders.count(None) == 3
    assert "bob-secret" not in str(state)
    assert [(q["name"], q["position"], q["gpu"]) for q in main["queue"]] == [
        ("alice-next", 1, "8x A100")
    ]
    # 5 of a0+a1's 16 A100s are held, 2 of them by main: its dominant share is 2/16.
    assert main["standing"] == {"gpus_held": 2, "running": 1, "waiting": 1, "share": 0.125}
    assert main["quotas"] == {"A100": 12}


def test_usage_is_sampled_per_project_and_charted_for_the_last_hour(ctx: WorkerContext) -> None:
    _place(ctx, "main", "train", "a1", 4)
    sample_usage(ctx, now=1_000.0)
    sample_usage(ctx, now=1_030.0)
    got = usage.samples(ctx.store, "main", since=0)
    assert [(s["used"], s["total"], s["queued"]) for s in got] == [(4, 16, 0), (4, 16, 0)]
    # Both projects share the cluster: lab's chart counts main's GPUs as used too.
    assert [s["used"] for s in usage.samples(ctx.store, "lab", since=0)] == [4, 4]
