"""Doing one job's work for many jobs at once, each failing on its own.

Provisioning a pass's placements (:mod:`workers.provision_batch`) and tearing down
the jobs stops asked for (:mod:`workers.teardown_drain`) are each a few apiserver
round trips of mostly waiting per job, so a batch overlaps them. Retries keep their
per-job meaning: a job that meets a :class:`TemporaryError` (the apiserver away, a
startup order not reached yet) goes on alone as its own task after the delay the
error asks for; any other error is logged and left to beat's sweep, which sends the
work again for a job left undone, as it does for a lost message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shared import logs, tasks
from shared.errors import TemporaryError
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def each_job(
    ctx: WorkerContext,
    job_ids: list[str],
    work: Callable[[WorkerContext, str], None],
    *,
    concurrency: int,
    retry_task: str,
    doing: str,
) -> None:
    """``work(ctx, job_id)`` for every job, ``concurrency`` at once; ``doing`` names the
    work in the log ("provisioning"), ``retry_task`` the task a temporary failure goes
    on as."""

    def one(job_id: str) -> None:
        with logs.context(job=job_id):
            try:
                work(ctx, job_id)
            except TemporaryError as e:
                log.info("%s job %s waits %.0f s: %s", doing, job_id, e.delay, e.message)
                tasks.send(ctx.celery, retry_task, job_id, countdown=e.delay)
            except Exception:
                log.exception("%s job %s failed", doing, job_id)

    workers = min(len(job_ids), concurrency)
    if workers <= 1:
        for job_id in job_ids:
            one(job_id)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=doing) as pool:
        # list(): wait for every job, and surface nothing (each logs its own failure).
        list(pool.map(one, job_ids))
