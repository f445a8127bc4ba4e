"""Beat's reaper of orphaned Kubernetes objects: what no live run explains is deleted.

Faults leave objects that no message will ever clean up: a worker killed
after creating a pod but before handing its stopped job to teardown (the
redelivered provision finds the job finished and, rightly, does nothing), a
purge lost with its worker. Kubernetes is the truth about what exists, so this
is level-triggered: beat sends it every ``workers.celery_app.REAP_EVERY_S``,
and it lists Berth's run objects in each namespace the server config uses and
deletes

- a pod whose job is gone, or finished while the pod still holds its node
  (phase Pending or Running);
- a secret whose job is gone or finished: registry credentials and env values
  naming project secrets must not outlive the job;
- a run's service when no unfinished run of that name exists;
- a project's SSH Secret that no Berth pod in the namespace has named for two
  passes some minutes apart (``workers/ssh_secret.py`` says why two).

An ended pod of a known job is kept: the log collector may not have read all of
its output yet (after a restart it reads again from the pod), and its status is
what ``kubectl describe`` shows. Jump-host objects
carry no run label and are never touched.

Beat's passes run one at a time (:func:`reap_orphans_once`, a claim in Redis): at
10,000 jobs a pass can take longer than beat's 30 s, and passes that overlapped
deleted the same objects again (the 10,000-job bench counted 3.4 DELETEs of each
job's Secret, ``bench/RESULTS.md``). A pass that finds the claim taken does nothing;
a later tick looks again. The claim lapses after ``_REAPER_TTL_S`` if its holder dies.

Why this cannot reap live work: a job's record is written before any of its
objects, only missing or finished jobs are reaped, and finished is final. A
service is checked again right before it is deleted, since a new run may
reuse a finished run's name (and so its service).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

import msgspec

from shared import kube
from shared.clusters import Cluster
from shared.errors import (
    ConfigError,
    KubeConflict,
    KubeNotFound,
    KubeTemporaryError,
    NotFoundError,
)
from shared.kube.raw import Raw, dig, labels_of
from shared.state.records import RunStatus
from shared.state.store import Store
from workers import ssh_secret
from workers.context import WorkerContext

log = logging.getLogger(__name__)

REAPER = ("claim", "orphan-reaper")
"""The claim a reaper pass holds (``Store.key`` parts)."""
# Longer than a pass at 10,000 jobs; a reaper killed mid-pass holds it no longer.
_REAPER_TTL_S = 120
_HOLDING_PHASES = frozenset({"Pending", "Running", None})
_SELECTOR = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{kube.LABEL_RUN}"


def reap_orphans_once(ctx: WorkerContext) -> list[str] | None:
    """Beat's pass: :func:`reap_orphans` unless another pass runs now (None then)."""
    key, me = ctx.store.key(*REAPER), secrets.token_hex(8)
    if not ctx.store.claim(key, me, ttl_s=_REAPER_TTL_S):
        log.info("another orphan reaper pass is running: this one is skipped")
        return None
    try:
        return reap_orphans(ctx)
    finally:
        ctx.store.release(key, me)


def reap_orphans(ctx: WorkerContext) -> list[str]:
    """Delete every orphaned pod, secret and service; return what was deleted."""
    reaped: list[str] = []
    for cluster, projects in _namespaces(ctx).values():
        reaped += _reap(ctx.store, cluster, projects)
    if reaped:
        log.info("reaped %d orphaned objects: %s", len(reaped), ", ".join(reaped))
    return reaped


def _namespaces(ctx: WorkerContext) -> dict[tuple[str, str], tuple[Cluster, set[str]]]:
    """Each (cluster, namespace) once, with the projects that use it."""
    out: dict[tuple[str, str], tuple[Cluster, set[str]]] = {}
    for project in ctx.server.project_names():
        try:
            found = [ctx.clusters.for_project(project, n) for n in ctx.clusters.names_of(project)]
        except ConfigError:
            continue  # a project without a backend has no objects
        for cluster in found:
            key = (cluster.backend.cluster_key(), cluster.namespace)
            out.setdefault(key, (cluster, set()))[1].add(project)
    return out


def _reap(store: Store, cluster: Cluster, projects: set[str]) -> list[str]:
    k = cluster.kube
    ns = cluster.namespace
    every: dict[str, list[Raw]] = {
        kind: _listed(k, lister, ns)
        for kind, lister in (
            ("pod", k.core.list_namespaced_pod),
            ("secret", k.core.list_namespaced_secret),
            ("service", k.core.list_namespaced_service),
        )
    }
    listed = {
        kind: [
            obj
            for obj in objects
            if labels_of(obj).get(kube.LABEL_PROJECT) in projects
            and dig(obj, "metadata", "deletionTimestamp") is None
        ]
        for kind, objects in every.items()
    }
    job_ids = sorted(
        {
            labels_of(obj)[kube.LABEL_JOB]
            for kind in ("pod", "secret")
            for obj in listed[kind]
            if kube.LABEL_JOB in labels_of(obj)
        }
    )
    jobs = store.job_states(job_ids)
    reaped = []
    for obj in listed["pod"]:
        if _pod_is_orphan(obj, jobs):
            _delete(k, k.core.delete_namespaced_pod, obj, ns, grace_period_seconds=0)
            reaped.append(f"pod/{_name(obj)}")
    for obj in listed["secret"]:
        if _job_is_gone(obj, jobs):
            _delete(k, k.core.delete_namespaced_secret, obj, ns)
            reaped.append(f"secret/{_name(obj)}")
    for obj in listed["service"]:
        if not _run_is_live(store, obj):  # read now, just before deleting
            _delete(k, k.core.delete_namespaced_service, obj, ns)
            reaped.append(f"service/{_name(obj)}")
    for obj in ssh_secret.unused(store, cluster, projects, every["pod"]):
        _delete(k, k.core.delete_namespaced_secret, obj, ns)
        reaped.append(f"secret/{_name(obj)}")
    return reaped


class _Meta(msgspec.Struct):
    name: str = ""
    uid: str = ""
    labels: dict[str, str] | None = None
    deletionTimestamp: str | None = None  # the API's own name


class _Status(msgspec.Struct):
    phase: str | None = None


class _Object(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    status: _Status | None = None


class _List(msgspec.Struct):
    items: list[_Object] | None = None


_LIST = msgspec.json.Decoder(_List)


def _listed(k: kube.Kube, lister: Any, namespace: str) -> list[Raw]:
    """Berth's objects of one kind in ``namespace``, as JSON holding only what the reaper
    reads (name, uid, labels, deletion, phase).

    Ended pods are kept for their output, so a namespace holds thousands; every 30 s,
    client model objects for them were a tenth of a worker's CPU in a 2,000-job drain,
    and ``json.loads`` of the whole answer still an eighth at 10,000 (py-spy, bench
    peers). msgspec skips the rest of each object without building it."""
    data = k.call_bytes(lister, namespace, label_selector=_SELECTOR)
    try:
        items = _LIST.decode(data).items or []
    except msgspec.DecodeError as e:
        raise KubeTemporaryError(f"Kubernetes API answered with bad JSON: {e}") from e
    return [msgspec.to_builtins(item) for item in items]


def _name(obj: Raw) -> str:
    return str(dig(obj, "metadata", "name"))


def _pod_is_orphan(pod: Raw, jobs: dict[str, RunStatus]) -> bool:
    job_id = labels_of(pod).get(kube.LABEL_JOB)
    if job_id is None:
        return False  # not a job's pod
    status = jobs.get(job_id)
    if status is None:
        return True
    return status.is_finished and dig(pod, "status", "phase") in _HOLDING_PHASES


def _job_is_gone(obj: Raw, jobs: dict[str, RunStatus]) -> bool:
    job_id = labels_of(obj).get(kube.LABEL_JOB)
    if job_id is None:
        return False
    status = jobs.get(job_id)
    return status is None or status.is_finished


def _run_is_live(store: Store, obj: Raw) -> bool:
    labels = labels_of(obj)
    try:
        run = store.run_by_name(labels[kube.LABEL_PROJECT], labels[kube.LABEL_RUN])
    except NotFoundError:
        return False
    return not run.status.is_finished


def _delete(k: kube.Kube, fn: Any, obj: Raw, namespace: str, **kwargs: Any) -> None:
    # Only this very object (by UID): a new one under the same name is left alone.
    body = {"preconditions": {"uid": dig(obj, "metadata", "uid")}}
    with contextlib.suppress(KubeNotFound, KubeConflict):
        k.call(fn, _name(obj), namespace, body=body, **kwargs)
