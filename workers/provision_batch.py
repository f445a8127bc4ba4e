"""Provisioning the jobs one scheduling pass placed, together.

A pass that places N jobs sends one message (up to 32 job ids, see
``workers/scheduling.py``) instead of N. Here each job is provisioned exactly
as a ``provision_job`` task would (:func:`workers.provisioning.provision_job`),
``kube.provision_concurrency`` at a time: a job is a few apiserver round trips
of mostly waiting, and overlapping them is what makes a burst's pods appear at
the apiserver's pace rather than one worker thread's.

Retries keep their per-job meaning (:mod:`workers.job_batch`): a job that meets a
:class:`~shared.errors.TemporaryError` goes on alone as a ``provision_job`` task,
with that task's backoff and retry limit from there; the others are not held back
by it. Beat's sweep re-sends provisioning for a placed job that has no pod after a
while. A redelivered message provisions again harmlessly: each job's provisioning
is idempotent.
"""

from __future__ import annotations

from shared import tasks
from workers import provisioning
from workers.context import WorkerContext
from workers.job_batch import each_job


def provision_jobs(ctx: WorkerContext, job_ids: list[str]) -> None:
    """Provision every job of ``job_ids`` (idempotent), several at once."""
    each_job(
        ctx,
        job_ids,
        provisioning.provision_job,
        concurrency=ctx.settings.kube.provision_concurrency,
        retry_task=tasks.PROVISION_JOB,
        doing="provisioning",
    )
