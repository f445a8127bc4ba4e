"""Tearing down the jobs stops asked for (:mod:`shared.queueing.teardowns`), in batches.

One drainer at a time holds the claim and takes the waiting job ids ``BATCH`` at a
time, tearing each down as a ``teardown_job`` task would
(:func:`workers.teardown.teardown_job`), ``kube.teardown_concurrency`` at once: a
job's teardown is a DELETE and a few Redis writes of mostly waiting. Errors keep their
per-job meaning (:mod:`workers.job_batch`); beat's sweep sends a teardown for every
job still terminating. A drainer killed mid-batch loses the ids it took; they stay
marked queued until the hold ends, and the sweep sends them then (its Celery message,
acknowledged late, also comes back and drains the rest).
"""

from __future__ import annotations

import secrets

from shared import tasks
from shared.queueing import teardowns
from workers import teardown
from workers.context import WorkerContext
from workers.job_batch import each_job

BATCH = 64
_CLAIM_TTL_S = 60  # renewed before every batch; a killed drainer's claim lapses


def drain(ctx: WorkerContext) -> int:
    """Tear down every waiting job, unless another drainer is at it; returns the jobs
    this call tore down."""
    store = ctx.store
    runner = store.key(*teardowns.RUNNER)
    me = secrets.token_hex(8)
    done = 0
    while True:
        if not store.claim(runner, me, ttl_s=_CLAIM_TTL_S):
            return done  # the drainer at work will see what was added
        try:
            while True:
                store.claim(runner, me, ttl_s=_CLAIM_TTL_S, renew=True)
                job_ids = teardowns.take(store, BATCH)
                if not job_ids:
                    break
                _tear_down(ctx, job_ids)
                done += len(job_ids)
        finally:
            store.release(runner, me)
        # An id added between our last take and the release found the claim held and
        # sent no task: it is ours.
        if not teardowns.waiting(store):
            return done


def _tear_down(ctx: WorkerContext, job_ids: list[str]) -> None:
    each_job(
        ctx,
        job_ids,
        _one,
        concurrency=ctx.settings.kube.teardown_concurrency,
        retry_task=tasks.TEARDOWN_JOB,
        doing="teardown",
    )


def _one(ctx: WorkerContext, job_id: str) -> None:
    ctx.store.unmark_queued(tasks.TEARDOWN_JOB, job_id)  # started: the sweep may send again
    teardown.teardown_job(ctx, job_id)
