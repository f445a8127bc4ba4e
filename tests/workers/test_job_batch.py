"""One job's work for many jobs at once (workers/job_batch.py), on the real broker:
each job fails on its own, and a temporary failure goes on as that job's own task."""

from __future__ import annotations

import json

import pytest

from shared import tasks
from shared.errors import TemporaryError
from workers.context import WorkerContext
from workers.job_batch import each_job

pytestmark = pytest.mark.integration


def test_each_job_fails_alone_and_a_temporary_failure_becomes_its_own_task(
    ctx: WorkerContext,
) -> None:
    done: list[str] = []

    def work(_ctx: WorkerContext, job_id: str) -> None:
        if job_id == "later":
            raise TemporaryError("the apiserver is away", delay=7)
        if job_id == "broken":
            raise RuntimeError("a bug")
        done.append(job_id)

    ids = ["a", "later", "b", "broken", "c"]
    each_job(ctx, ids, work, concurrency=3, retry_task=tasks.TEARDOWN_JOB, doing="teardown")

    assert sorted(done) == ["a", "b", "c"]
    key = f"{ctx.settings.redis.key_prefix}:celery:teardown"
    (message,) = [json.loads(raw) for raw in ctx.store.r.lrange(key, 0, -1)]
    assert message["headers"]["task"] == tasks.TEARDOWN_JOB
    assert message["headers"]["argsrepr"] == "['later']"
    assert message["headers"]["eta"] is not None  # after the delay it asked for
