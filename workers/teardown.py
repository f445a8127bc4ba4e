"""Deleting what a job created, and finishing its record. Safe to repeat."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from shared import kube
from shared.clusters import Cluster, job_cluster, run_clusters
from shared.errors import KubeConflict, KubeNotFound
from shared.placement import node_order
from shared.queueing.wake import wake_scheduler
from shared.runlogs.store import LogStore
from shared.state.jobs import refresh_run
from shared.state.lifecycle import can_move
from shared.state.records import Event, Job, Run, RunStatus
from workers import code_volume
from workers.context import WorkerContext
from workers.podspec import OBJECT_KINDS, object_verbs, run_has_services

_CAS_ATTEMPTS = 10


def teardown_job(ctx: WorkerContext, job_id: str) -> None:
    """Delete the job's pod and secret (and the run's services once no job needs them)."""
    store = ctx.store
    job = store.find_job(job_id)
    if job is None:
        return
    run = store.get_run(job.run_id)
    cluster = ctx.clusters.for_job(job)
    grace = 0 if run.abort else None  # abort skips the pod's termination grace period
    if not _delete_created(cluster, job, grace=grace):
        _delete_by_label(cluster, kube.LABEL_JOB, job.id, grace=grace)
    for attempt in range(_CAS_ATTEMPTS):
        if attempt:  # the first try writes the job as read above; a lost race reads it again
            job = store.get_job(job_id)
        if job.status.is_finished:
            break
        # A replica scaling retired was stopped on purpose: terminated, never failed.
        stopped = run.stop_requested or job.retired
        target = RunStatus.TERMINATED if stopped else RunStatus.FAILED
        if job.reason == node_order.MASTER_DONE_REASON and not run.stop_requested:
            target = RunStatus.DONE  # stop_criteria master-done: the task succeeded
        if not can_move(job.status, target):
            break
        if not (job.status == RunStatus.TERMINATING and job.reason):  # keep a limit's reason
            job.reason = (
                "stopped by the user"
                if run.stop_requested
                else "released: another job of the run ended"
            )
        job.status = target
        event = Event(
            at=time.time(),
            kind="status",
            status=target,
            job=job.job_num,
            message=f"job {job.job_num} {target}",
        )
        if store.save_job(job, event):
            wake_scheduler(ctx.store, ctx.celery, job.run_id, freed=True)  # its GPUs
            break
    run = refresh_run(store, run.id)
    if run.status.is_finished:
        if run_has_services(run, job):
            _delete_run_services(cluster, run)
        _delete_code_secrets(cluster, run)


def teardown_pod(ctx: WorkerContext, job_id: str) -> None:
    """Delete only the job's pod (it goes back to the queue and will get a new one)."""
    job = ctx.store.find_job(job_id)
    if job is not None:
        delete_pods(ctx, job)


def delete_pods(ctx: WorkerContext, job: Job) -> None:
    """Delete ``job``'s pods where it is placed. A job sent back to the queue has lost its
    placement, and with it the name of the cluster its old pod is in: then in every
    cluster of its project (one LIST each), lest that pod start after all."""
    if job.placement is not None:
        names: list[str | None] = [job_cluster(job)]
    else:
        names = list(ctx.clusters.names_of(job.project))
    for name in names:
        cluster = ctx.clusters.for_project(job.project, name)
        _delete_by_label(cluster, kube.LABEL_JOB, job.id, grace=0, pods_only=True)


def purge_run(ctx: WorkerContext, run_id: str) -> None:
    """Delete every object of a finished run, then its records (``berth delete``)."""
    run = ctx.store.find_run(run_id)
    if run is None:
        return
    if not run.status.is_finished:
        return  # the API refuses this; a stray message must not delete live work
    # By job id, not run name: a newer run may already reuse the name.
    for name in run_clusters(ctx.store.jobs_of(run)):
        cluster = ctx.clusters.for_project(run.project, name)
        for job_id in run.job_ids:
            _delete_by_label(cluster, kube.LABEL_JOB, job_id, grace=0)
        _delete_code_secrets(cluster, run)
    LogStore(ctx.store, cap_bytes=0).delete(run.job_ids)  # its output goes with it
    ctx.store.delete_run(run)


def _delete_created(cluster: Cluster, job: Job, *, grace: int | None) -> bool:
    """Delete the objects provisioning recorded for the job's current attempt, by name
    with their uids as preconditions; False when it recorded none (then list by label).

    A name is the run's (shared/kube/names.py), so a later run of that name may hold
    it by now: the uid makes the apiserver refuse (409) to delete anything but ours.
    Without the LISTs, stopping a run costs the apiserver one request per object
    instead of three, and no scan of the namespace.
    """
    if job.created_attempt != job.attempt or not job.created:
        return False
    k = cluster.kube
    objects = [(*key.split("/", 1), uid) for key, uid in job.created.items()]
    if any(kind not in OBJECT_KINDS for kind, _, _ in objects):
        return False  # written by a newer Berth: the label knows better
    for kind, name, uid in sorted(objects, key=lambda o: o[0] != "pod"):  # the pod first
        options: dict[str, object] = {"preconditions": {"uid": uid}}
        if kind == "pod" and grace is not None:
            options["gracePeriodSeconds"] = grace
        with contextlib.suppress(KubeNotFound, KubeConflict):  # gone, or not ours
            _, _, delete = object_verbs(k, kind)
            # The answer (the pod being deleted) is not read into a V1Pod: a ms of CPU.
            k.call_bytes(delete, name, cluster.namespace, body=options)
    return True


def _delete_by_label(
    cluster: Cluster,
    key: str,
    value: str,
    *,
    grace: int | None,
    pods_only: bool = False,
) -> None:
    k = cluster.kube
    selector = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{key}={value}"
    ns = cluster.namespace
    for name in _names(k, k.core.list_namespaced_pod, ns, selector):
        _ignore_missing(k, k.core.delete_namespaced_pod, name, ns, grace_period_seconds=grace)
    if pods_only:
        return
    for name in _names(k, k.core.list_namespaced_secret, ns, selector):
        _ignore_missing(k, k.core.delete_namespaced_secret, name, ns)


def _names(k: kube.Kube, list_fn: Callable[..., Any], namespace: str, selector: str) -> list[str]:
    """The names of the objects a LIST finds, read from its JSON: turning every pod of
    the list into client models (to read one field) was most of a teardown's CPU."""
    body = k.call_json(list_fn, namespace, label_selector=selector)
    return [item["metadata"]["name"] for item in body.get("items") or []]


def _delete_run_services(cluster: Cluster, run: Run) -> None:
    k = cluster.kube
    selector = _run_selector(run)
    for svc in k.call(
        k.core.list_namespaced_service, cluster.namespace, label_selector=selector
    ).items:
        _ignore_missing(k, k.core.delete_namespaced_service, svc.metadata.name, cluster.namespace)


def _delete_code_secrets(cluster: Cluster, run: Run) -> None:
    """The run's code archive, shared by its jobs: kept across retries, gone with the run."""
    if not run.code:
        return
    k = cluster.kube
    selector = _run_selector(run)
    prefix = code_volume.secret_prefix(run)
    for secret in k.call(
        k.core.list_namespaced_secret, cluster.namespace, label_selector=selector
    ).items:
        if secret.metadata.name.startswith(prefix):
            _ignore_missing(
                k, k.core.delete_namespaced_secret, secret.metadata.name, cluster.namespace
            )


def _run_selector(run: Run) -> str:
    """The label selector of every object labelled with the run (not per job)."""
    return ",".join(
        f"{key}={value}" for key, value in kube.berth_labels(run.project, run.name).items()
    )


def _ignore_missing(k: kube.Kube, fn: object, *args: object, **kwargs: object) -> None:
    # Already gone: the second delivery of a teardown lands here.
    with contextlib.suppress(KubeNotFound):
        k.call_bytes(fn, *args, **kwargs)  # type: ignore[arg-type]
