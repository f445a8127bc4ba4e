"""A pod Berth binds itself can run before its creator records its name.

With ``spec.nodeName`` set the kubelet (KWOK: at once) may start the pod while the
provisioning thread that created it has not yet written the pod's name into the job.
The proxy worker's watch then brings "Running" for a job with no pod name; the
verdict records the name itself (``workers.provisioning._apply``), so the run never
shows running with no pod. Real Redis; the pod is the JSON a watch delivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from shared.kube.names import job_pod_name
from shared.state.records import Job, RunStatus
from tests.workers.worlds import backend, submit, worker_context
from workers import provisioning, scheduling
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    projects = [{"name": "main", "backends": [backend(local_cluster.kubeconfig)]}]
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, projects) as context:
        yield context


def _pod(job: Job, *, phase: str, attempt: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": job_pod_name(job),
            "uid": "u-1",
            "labels": {kube.LABEL_JOB: job.id, kube.LABEL_ATTEMPT: str(attempt)},
        },
        "spec": {"nodeName": "a0"},
        "status": {"phase": phase, "podIP": "10.244.0.9"},
    }


def _placed(ctx: WorkerContext) -> Job:
    run = submit(ctx, "racer", "A100:1")
    assert scheduling.run_pass(ctx).placed == ["racer"]
    (job,) = ctx.store.jobs_of(ctx.store.get_run(run.id))
    assert job.status == RunStatus.PROVISIONING and job.pod_name is None  # not created yet
    return job


def test_a_running_pod_seen_before_its_name_was_written_records_it(ctx: WorkerContext) -> None:
    job = _placed(ctx)

    provisioning.apply_pod(ctx, job.id, _pod(job, phase="Running", attempt=job.attempt))

    after = ctx.store.get_job(job.id)
    assert after.status == RunStatus.RUNNING
    assert after.pod_name == job_pod_name(job)
    assert after.pod_ip == "10.244.0.9"
    assert ctx.store.get_run(job.run_id).status == RunStatus.RUNNING


def test_an_earlier_attempts_pod_of_the_same_name_records_nothing(ctx: WorkerContext) -> None:
    job = _placed(ctx)

    provisioning.apply_pod(ctx, job.id, _pod(job, phase="Running", attempt=job.attempt - 1))

    after = ctx.store.get_job(job.id)
    assert after.status == RunStatus.PROVISIONING and after.pod_name is None
