"""Provisioning the jobs one scheduling pass placed, together.

A pass that places N jobs sends one message (up to 32 job ids, see
``workers/scheduling.py``) instead of N. Here each job is provisioned exactly
as a ``provision_job`` task would (:func:`workers.provisioning.provision_job`),
``kube.provision_concurrency`` at a time: a job is a few apiserver round trips
of mostly waiting, and overlapping them is what makes a burst's pods appear at
the apiserver's pace rather than one worker thread's.

Retries keep their per-job meaning. A job that meets a :class:`TemporaryError`
(the apiserver away, a startup order not reached yet) goes on alone as a
``provision_job`` task after the delay the error asks for, with that task's
backoff and retry limit from there; the others are not held back by it. Any
other error is logged and left to beat's sweep, which re-sends provisioning for
a placed job that has no pod after a while, as it does for a lost message. A
redelivered message provisions again harmlessly: each job's provisioning is
idempotent.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from shared import logs, tasks
from shared.errors import TemporaryError
from workers import provisioning
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def provision_jobs(ctx: WorkerContext, job_ids: list[str]) -> None:
    """Provision every job of ``job_ids`` (idempotent), several at once."""
    if not job_ids:
        return
    workers = min(len(job_ids), ctx.settings.kube.provision_concurrency)
    if workers == 1:
        for job_id in job_ids:
            _provision_one(ctx, job_id)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="provision") as pool:
        # list(): wait for every job, and surface nothing (each logs its own failure).
        list(pool.map(lambda job_id: _provision_one(ctx, job_id), job_ids))


def _provision_one(ctx: WorkerContext, job_id: str) -> None:
    with logs.context(job=job_id):
        try:
            provisioning.provision_job(ctx, job_id)
        except TemporaryError as e:
            log.info("provisioning job %s waits %.0f s: %s", job_id, e.delay, e.message)
            tasks.send(ctx.celery, tasks.PROVISION_JOB, job_id, countdown=e.delay)
        except Exception:
            # Beat's sweep re-sends provisioning for a placed job left without a pod.
            log.exception("provisioning job %s failed", job_id)
