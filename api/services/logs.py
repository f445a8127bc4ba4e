"""Streaming a job's container output from the Kubernetes API.

Berth keeps no copy of logs: they come from the pod through the apiserver,
exactly as ``kubectl logs`` gets them. With ``follow`` the stream waits for
the pod to exist and ends when the job finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3

from shared.clusters import ClusterRegistry
from shared.errors import KubeError, NotFoundError
from shared.records import Job, Run
from shared.store import Store

_POLL_S = 0.5  # how often a follower re-checks whether the pod exists yet
_FOLLOW_READ_TIMEOUT_S = 300  # a silent running job keeps its stream this long per read
_CHUNK = 4096
_DRAIN_S = 1.0  # after the job ends, output still in flight gets this long


def stream_logs(
    store: Store,
    clusters: ClusterRegistry,
    run: Run,
    *,
    job_num: int,
    replica_num: int,
    follow: bool,
    wait_s: float = 3600.0,
) -> Iterator[bytes]:
    """Yield log bytes of one job; raise NotFoundError for a job that does not exist."""
    job = _find_job(store, run, job_num, replica_num)
    deadline = time.monotonic() + wait_s
    while job.pod_name is None or (job.pod_ip is None and not job.status.is_finished):
        if not follow or job.status.is_finished or time.monotonic() > deadline:
            break
        time.sleep(_POLL_S)
        job = store.get_job(job.id)
    if job.pod_name is None:
        return
    cluster = clusters.for_project(run.project)
    k = cluster.kube
    try:
        resp = k.call(
            k.core.read_namespaced_pod_log,
            job.pod_name,
            cluster.namespace,
            follow=follow,
            _preload_content=False,
            _request_timeout=(k.timeout, _FOLLOW_READ_TIMEOUT_S if follow else k.timeout),
        )
    except KubeError as e:
        yield f"[berth] logs unavailable: {e}\n".encode()
        return
    stop = threading.Event()
    if follow:
        # Some kubelets (and KWOK) keep a follow stream open after the container
        # ends; a watcher ends it when the job finishes, so the user's follow ends too.
        threading.Thread(
            target=_end_when_finished, args=(store, job.id, resp, stop), daemon=True
        ).start()
    try:
        yield from resp.stream(_CHUNK)
    except (urllib3.exceptions.HTTPError, OSError) as e:
        if not stop.is_set():
            yield f"\n[berth] log stream ended: {e}\n".encode()
    finally:
        stop.set()
        resp.release_conn()


def _end_when_finished(store: Store, job_id: str, resp: Any, stop: threading.Event) -> None:
    while not stop.wait(_POLL_S):
        job = store.find_job(job_id)
        if job is None or job.status.is_finished:
            stop.wait(_DRAIN_S)  # let the last lines through before cutting the stream
            stop.set()
            resp.shutdown()
            return


def _find_job(store: Store, run: Run, job_num: int, replica_num: int) -> Job:
    for job in store.jobs_of(run):
        if job.job_num == job_num and job.replica_num == replica_num:
            return job
    raise NotFoundError(
        f"run {run.name!r} has no job {job_num} in replica {replica_num}", field="job"
    )
