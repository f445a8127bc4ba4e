"""Tearing down the jobs stops asked for (:mod:`shared.queueing.teardowns`), in batches.

One drainer at a time holds the claim and takes the waiting job ids ``BATCH`` at a
time, tearing each down as a ``teardown_job`` task would
(:func:`workers.teardown.teardown_job`), ``kube.teardown_concurrency`` at once: a
job's teardown is a DELETE and a few Redis writes of mostly waiting. Errors keep their
per-job meaning: a :class:`TemporaryError` sends that job on alone as a
``teardown_job`` task after the delay it asks for; anything else is logged and left
to beat's sweep, which sends a teardown for every job still terminating. A drainer
killed mid-batch loses the ids it took; they stay marked queued until the hold ends,
and the sweep sends them then (its Celery message, acknowledged late, also comes back
and drains the rest).
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor

from shared import logs, tasks
from shared.errors import TemporaryError
from shared.queueing import teardowns
from workers import teardown
from workers.context import WorkerContext

log = logging.getLogger(__name__)

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
    workers = min(len(job_ids), ctx.settings.kube.teardown_concurrency)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teardown") as pool:
        list(pool.map(lambda job_id: _one(ctx, job_id), job_ids))


def _one(ctx: WorkerContext, job_id: str) -> None:
    with logs.context(job=job_id):
        try:
            ctx.store.unmark_queued(tasks.TEARDOWN_JOB, job_id)
            teardown.teardown_job(ctx, job_id)
        except TemporaryError as e:
            log.info("tearing down job %s waits %.0f s: %s", job_id, e.delay, e.message)
            tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id, countdown=e.delay)
        except Exception:
            # Beat's sweep sends a teardown for every job still terminating.
            log.exception("tearing down job %s failed", job_id)
