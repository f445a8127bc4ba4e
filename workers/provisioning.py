"""Creating a job's Kubernetes objects, and following its pod to a final state.

Both functions reload state, act, and write with compare-and-set, so a second
or late delivery is harmless: a job that is no longer ``provisioning`` is left
alone, and objects that already exist are adopted when their labels say they
belong to this job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared import kube, logs, tasks
from shared.clusters import Cluster
from shared.configuration.groups import group_configuration, stored_router
from shared.configuration.parse import configuration_from_stored
from shared.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    NotFoundError,
    StoreError,
    TemporaryError,
)
from shared.kube.names import job_pod_name
from shared.kube.raw import Raw, as_raw, dig, labels_of, uid_of
from shared.metrics import SUBMIT_TO_RUNNING
from shared.placement import autoscaling, node_order
from shared.policy.pod_security import stricter
from shared.policy.resource_quotas import namespace_key, note_refusal
from shared.queueing.namespace_only import is_scheduler_node
from shared.queueing.namespace_quota import quota_refusal
from shared.queueing.wake import wake_scheduler
from shared.runlogs.store import LogStore
from shared.state import code as code_archive
from shared.state import secrets
from shared.state.jobs import refresh_run
from shared.state.lifecycle import can_move
from shared.state.records import Event, Job, Run, RunStatus
from shared.volumes.volume_placement import host_volume_refusal
from workers import code_volume, node_pools, requeue, scheduler_placement, ssh_secret, volumes
from workers.context import WorkerContext
from workers.pod_status import PodVerdict, judge_pod
from workers.podspec import PodContext, build_job_objects, object_verbs, output_keeping

log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 10


def provision_job(ctx: WorkerContext, job_id: str) -> None:
    """Create the secret, services and pod of a placed job (idempotent)."""
    store = ctx.store
    job = store.find_job(job_id)
    if job is None or job.status != RunStatus.PROVISIONING:
        return
    run = store.get_run(job.run_id)
    if run.stop_requested:
        return  # teardown owns it now
    conf = configuration_from_stored(run.configuration)
    cluster = ctx.clusters.for_job(job)
    master_ip = None
    order = getattr(conf, "startup_order", "any")
    if job.jobs_in_run > 1:
        replica = [j for j in store.jobs_of(run) if j.replica_num == job.replica_num]
        wait = node_order.waiting_for(order, job, replica)
        if wait is not None:
            raise TemporaryError(wait, delay=2)  # woken when they run (_follow_node_order)
        # Workers started first cannot know rank 0's IP: their pods resolve it by DNS.
        if job.job_num > 0 and order != "workers-first":
            master_ip = _master_ip(ctx, job)
    router_ip = _dynamo_router_ip(ctx, run, job)
    backend = cluster.backend
    assert job.placement is not None
    try:
        refusal = host_volume_refusal(
            getattr(conf, "volumes", []), allow_host_volumes=backend.allow_host_volumes
        )
        if refusal is not None:
            raise ConfigError(refusal, field="volumes")
        claims = volumes.claims_for_run(store, cluster, run, conf)
    except (ConfigError, KubeError) as e:
        if isinstance(e, TemporaryError):
            raise
        _finish(ctx, job_id, RunStatus.FAILED, f"cannot mount the run's volumes: {e.message}")
        return
    try:
        names = {n for found in secrets.references(conf).values() for n in found}
        box = secrets.SecretBox(ctx.settings.secrets.key) if names else None
        secret_values = secrets.resolve(store, box, run.project, names) if box else {}
    except (NotFoundError, ConfigError) as e:
        _finish(ctx, job_id, RunStatus.FAILED, f"cannot give the run its secrets: {e.message}")
        return
    code_secrets: list[dict[str, Any]] = []
    if run.code:
        try:
            code_secrets = code_volume.code_secrets(run, code_archive.load(store, run.code))
        except NotFoundError as e:
            _finish(ctx, job_id, RunStatus.FAILED, f"cannot give the run its code: {e.message}")
            return
    scheduled_by_kube = is_scheduler_node(job.placement.node)
    try:
        # The job's group's resources: groups may ask for different GPUs.
        own = group_configuration(conf, job.group)
        affinity = scheduler_placement.scheduler_affinity(run, own) if scheduled_by_kube else None
    except ValueError as e:
        _finish(ctx, job_id, RunStatus.FAILED, f"cannot ask the kube-scheduler for it: {e}")
        return
    # Decided (with the namespace's label) at submission; a stricter setting since wins.
    level = stricter(run.pod_security, backend.pod_security)
    pod_ctx = PodContext(
        default_image=ctx.settings.default_image,
        devel_image=ctx.settings.devel_image,
        server_url=ctx.settings.api.url_for_runs,
        router_ip=router_ip,
        dind_image=ctx.settings.dind_image,
        master_ip=master_ip,
        ssh_public_keys=_ssh_keys(ctx, run.user, conf),
        pod_settings=backend.pod_settings(),
        claims=claims,
        allow_host_volumes=backend.allow_host_volumes and level == "privileged",
        pod_security=level,
        pod_uid=backend.pod_security_uid,
        ssh_init_image=backend.ssh_init_image,
        node_pool=autoscaling.find_pool(backend.node_pools, job.placement.node),
        code_parts=len(code_secrets),
        secret_values=secret_values,
        scheduler_affinity=affinity,
        output=output_keeping(ctx.settings.logs),
    )
    objects = build_job_objects(run, job, conf, pod_ctx)
    created: dict[str, str | None] = {}  # this job's own objects, for teardown
    try:
        if objects.ssh_secret is not None:  # one per project and key set
            ssh_secret.ensure(cluster, run.project, pod_ctx.ssh_public_keys)
        for secret in code_secrets:  # one set per run, shared by its jobs
            _create_or_adopt(ctx, cluster, "secret", secret, job, per_run=True)
        if objects.secret is not None:
            uid = _create_or_adopt(ctx, cluster, "secret", objects.secret, job)
            created[f"secret/{objects.secret['metadata']['name']}"] = uid
        for service in objects.services:
            _create_or_adopt(ctx, cluster, "service", service, job, per_run=True)
        created[f"pod/{objects.pod['metadata']['name']}"] = _create_or_adopt(
            ctx, cluster, "pod", objects.pod, job
        )
    except TemporaryError:
        raise  # the apiserver is away: Celery retries with backoff
    except KubeForbidden as e:
        refusal = quota_refusal(e.message)
        if refusal is not None:
            _wait_for_quota(ctx, cluster, job, refusal)
            return
        _finish(ctx, job_id, RunStatus.FAILED, f"Kubernetes refused the job's objects: {e.message}")
        return
    except KubeError as e:
        # Admission refused the spec, or a foreign object holds the name: retrying won't help.
        _finish(ctx, job_id, RunStatus.FAILED, f"Kubernetes refused the job's objects: {e.message}")
        return
    _record_pod(
        ctx, job_id, objects.pod["metadata"]["name"], created, job.attempt, objects.ssh_secret
    )
    if store.get_run(run.id).stop_requested:
        tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id)  # stopped while we were creating
    # No sync of its own: the proxy worker's pod watch applies the pod's states as they
    # come (workers/pod_follow.py), and beat's sweep re-syncs when no proxy worker does.


def sync_job(ctx: WorkerContext, job_id: str) -> None:
    """Read the job's pod and move the job to the state the pod shows (beat's sweep, and
    whenever the proxy worker's pod watch is not there to say it)."""
    job = _followed(ctx, job_id)
    if job is None:
        return
    cluster = ctx.clusters.for_job(job)
    k = cluster.kube
    try:
        pod: Raw | None = k.call_json(
            k.core.read_namespaced_pod, job_pod_name(job), cluster.namespace
        )
    except KubeNotFound:
        pod = None
    _follow_pod(ctx, job, pod)


def apply_pod(ctx: WorkerContext, job_id: str, pod: Any, *, deleted: bool = False) -> None:
    """Move the job to the state ``pod`` (its JSON or a ``V1Pod``; None or ``deleted``
    when it is gone) shows, and send what follows from it."""
    apply_watched_pod(ctx, job_id, lambda: pod, deleted=deleted)


def apply_watched_pod(
    ctx: WorkerContext, job_id: str, load: Callable[[], Any], *, deleted: bool = False
) -> None:
    """:func:`apply_pod` with the pod read by ``load`` only if the job still follows one.
    The proxy worker calls it with each pod its watch sees, so a job follows its pod
    without a task or a read per pod event; a finished job's (a stopped run's pod being
    deleted) costs one Redis read and no reading of the pod."""
    job = _followed(ctx, job_id)
    if job is not None:
        _follow_pod(ctx, job, load(), deleted=deleted)


def _follow_pod(ctx: WorkerContext, job: Job, pod: Any, *, deleted: bool = False) -> None:
    store = ctx.store
    job_id = job.id
    pod = None if pod is None else as_raw(pod)
    if pod is not None and not _current_pod(job, pod):
        return  # an earlier attempt's pod, or not the job's: its news is not the job's
    if deleted:
        pod = None
    now = time.time()
    # The run is read only when the verdict needs it: most pod events (created, bound)
    # change nothing, and a run's record (its configuration) is the larger read.
    stop_requested = pod is None and store.get_run(job.run_id).stop_requested
    verdict = judge_pod(pod, job=job, stop_requested=stop_requested, now=now)
    if pod is not None and job.placement and autoscaling.is_pool_node(job.placement.node):
        cluster = ctx.clusters.for_job(job)
        verdict = node_pools.judge_pool_wait(ctx, cluster, job, pod, verdict, now=now)
    elif pod is not None and job.placement and is_scheduler_node(job.placement.node):
        cluster = ctx.clusters.for_job(job)
        verdict = scheduler_placement.judge_scheduler_wait(ctx, cluster, job, pod, verdict, now=now)
    if verdict is None:
        return
    if job.reason == node_order.MASTER_DONE_REASON and verdict.status.is_finished:
        # Stopped because its master finished: however its pod ended, it is done.
        verdict = PodVerdict(RunStatus.DONE, node_order.MASTER_DONE_REASON, pod_ip=verdict.pod_ip)
    if job.retired and verdict.status.is_finished:
        # Scaled down: however its pod ended (SIGTERM's exit code), it was stopped on purpose.
        verdict = PodVerdict(RunStatus.TERMINATED, job.reason, pod_ip=verdict.pod_ip)
    if verdict.retry_event and not store.get_run(job.run_id).stop_requested:
        event, reason = verdict.retry_event, verdict.reason
        if requeue.retry_failed_job(ctx, job, event=event, reason=reason):
            return
    name = dig(pod, "metadata", "name") if pod is not None else None
    if not _apply(ctx, job_id, verdict, read=job, pod_name=name):
        # Nothing to write (most pod events: created, bound, a status change that is
        # not the job's) or another process wrote it first and follows it up itself;
        # a run left behind by a lost write is beat's sweep's (refresh_run).
        return
    if job.jobs_in_run > 1:
        _follow_node_order(ctx, job_id, verdict.status)
    refreshed = refresh_run(store, job.run_id)
    if verdict.status.is_finished:
        wake_scheduler(ctx.store, ctx.celery, job.run_id, freed=True)  # its GPUs, to the queue
    if refreshed.status.is_finished:
        _release_siblings(ctx, refreshed.job_ids)


def _current_pod(job: Job, pod: Raw) -> bool:
    if dig(pod, "metadata", "name") != job_pod_name(job):
        return False
    labels = labels_of(pod)
    return labels.get(kube.LABEL_JOB) == job.id and not _older_attempt(labels, job)


def _followed(ctx: WorkerContext, job_id: str) -> Job | None:
    """The job, if its state follows a pod now (placed, not finished)."""
    job = ctx.store.find_job(job_id)
    if (
        job is None
        or job.status.is_finished
        or job.status in (RunStatus.SUBMITTED, RunStatus.PENDING)
    ):
        return None
    return job


def _apply(
    ctx: WorkerContext,
    job_id: str,
    verdict: PodVerdict,
    *,
    read: Job | None = None,
    pod_name: str | None = None,
) -> bool:
    """Move the job to ``verdict``; True when this call wrote it. ``read`` is the job as
    just read, used for the first compare-and-set instead of reading it again;
    ``pod_name``: the pod the verdict is about, recorded if provisioning has not yet (a
    pod Berth binds itself can run before its creator writes its name)."""
    for attempt in range(_CAS_ATTEMPTS):
        job = read if attempt == 0 and read is not None else ctx.store.get_job(job_id)
        ready = verdict.ready if verdict.status == RunStatus.RUNNING else None
        if (
            job.status == verdict.status
            and job.pod_ip == (verdict.pod_ip or job.pod_ip)
            and job.ready == ready
        ):
            return False
        if job.status in (RunStatus.SUBMITTED, RunStatus.PENDING):
            return False  # requeued since the pod was read: the verdict is about an old pod
        if job.status != verdict.status and not can_move(job.status, verdict.status):
            return False
        changed = job.status != verdict.status
        # A job stopped for a reason (max_duration, inactivity) keeps it when its pod goes.
        keep = (
            job.status == RunStatus.TERMINATING
            and bool(job.reason)
            and verdict.status == RunStatus.TERMINATED
        )
        job.status = verdict.status
        job.reason = job.reason if keep else verdict.reason
        job.pod_ip = verdict.pod_ip or job.pod_ip
        job.pod_name = job.pod_name or pod_name
        job.exit_code = verdict.exit_code if verdict.exit_code is not None else job.exit_code
        readiness = _readiness_event(job, ready) if not changed else None
        job.ready = ready
        if verdict.status == RunStatus.PENDING:
            job.placement = None  # back to the queue: the scheduler places it afresh
            job.scheduler_binds = job.scheduler_binds or verdict.refused
            job.pod_name = None
            job.attempt += 1  # its next pod is a new attempt, with output of its own
        event = None
        if changed:
            msg = f"job {job.job_num} {verdict.status}" + (
                f": {verdict.reason}" if verdict.reason else ""
            )
            event = Event(
                at=time.time(), kind="status", status=job.status, job=job.job_num, message=msg
            )
        if ctx.store.save_job(job, event or readiness):
            if changed:
                with logs.context(run=job.run_id, job=job.id):
                    log.info(
                        "job %s of %s is %s %s", job.job_num, job.run_name, job.status, job.reason
                    )
            if changed and verdict.status == RunStatus.RUNNING:
                SUBMIT_TO_RUNNING.observe(max(0.0, time.time() - job.submitted_at))
            if verdict.status == RunStatus.PENDING:
                tasks.send(ctx.celery, tasks.TEARDOWN_POD, job_id)
                wake_scheduler(ctx.store, ctx.celery, job.run_id)
            return True
    return False


def _readiness_event(job: Job, ready: bool | None) -> Event | None:
    """An event when a running replica's probe starts or stops passing."""
    if ready is None or ready == job.ready:
        return None
    word = "ready" if ready else "not ready (its probe fails)"
    return Event(at=time.time(), kind="info", job=job.job_num, message=f"job {job.job_num} {word}")


def _follow_node_order(ctx: WorkerContext, job_id: str, status: RunStatus) -> None:
    """Wake the nodes waiting for this one to run; end the task when its master is done."""
    job = ctx.store.get_job(job_id)
    run = ctx.store.get_run(job.run_id)
    if job.status != status:
        return  # the verdict was not applied (an old pod's); nothing follows from it
    conf = configuration_from_stored(run.configuration)
    order = getattr(conf, "startup_order", "any")
    siblings = [j for j in ctx.store.jobs_of(run) if j.id != job.id]
    router = stored_router(run.configuration)
    routes = router is not None and router[1] == "dynamo" and job.group == router[0]
    if status in (RunStatus.RUNNING, RunStatus.DONE) and (node_order.follows(order, job) or routes):
        for other in siblings:
            if other.status == RunStatus.PROVISIONING and other.pod_name is None:
                tasks.send(ctx.celery, tasks.PROVISION_JOB, other.id)
    criteria = getattr(conf, "stop_criteria", "all-done")
    if status == RunStatus.DONE and node_order.stops_the_others(criteria, job):
        for other in siblings:
            if other.replica_num == job.replica_num:
                _stop_as_done(ctx, other.id)


def _stop_as_done(ctx: WorkerContext, job_id: str) -> None:
    """Stop a worker whose master finished; teardown records it as done."""
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.status.is_finished or job.status == RunStatus.TERMINATING:
            break
        job.status = RunStatus.TERMINATING
        job.reason = node_order.MASTER_DONE_REASON
        event = Event(
            at=time.time(),
            kind="status",
            status=job.status,
            job=job.job_num,
            message=f"job {job.job_num} stopping: {job.reason}",
        )
        if ctx.store.save_job(job, event):
            break
    tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id)


def _finish(ctx: WorkerContext, job_id: str, status: RunStatus, reason: str) -> None:
    _apply(ctx, job_id, PodVerdict(status=status, reason=reason))
    job = ctx.store.get_job(job_id)
    refresh_run(ctx.store, job.run_id)


def _wait_for_quota(ctx: WorkerContext, cluster: Cluster, job: Job, refusal: str) -> None:
    """A pod refused for a namespace quota goes back to the queue instead of failing.

    The scheduler counted the quota as it last read it; another creator (or a pod
    Berth had not seen counted yet) took the room since. The refusal is noted, so
    the next pass reads the quota afresh instead of placing on the same stale room.
    A gang member sent back sends its whole run back (``gang_not_ready``).
    """
    key = namespace_key(cluster.backend.cluster_key(), cluster.namespace)
    note_refusal(ctx.store, key, at=time.time())
    _finish(ctx, job.id, RunStatus.PENDING, f"pod refused for namespace quota: {refusal}")


def _release_siblings(ctx: WorkerContext, job_ids: list[str]) -> None:
    """A finished run frees every GPU: jobs still holding pods are torn down."""
    for job_id in job_ids:
        job = ctx.store.find_job(job_id)
        if job is not None and job.pod_name is not None and job.status not in (RunStatus.DONE,):
            tasks.send(ctx.celery, tasks.TEARDOWN_JOB, job_id)


def _dynamo_router_ip(ctx: WorkerContext, run: Run, job: Job) -> str | None:
    """For a worker of a service whose ``router: dynamo`` group finds its workers through
    etcd/NATS on the router's pod: that pod's address (dstack's
    ``DSTACK_ROUTER_INTERNAL_IP``), waited for; None for any other job."""
    found = stored_router(run.configuration)
    if found is None or found[1] != "dynamo" or job.group == found[0]:
        return None
    for other in ctx.store.jobs_of(run):
        if other.group == found[0] and not other.retired and not other.status.is_finished:
            if other.pod_ip:
                return other.pod_ip
            # Woken when the router runs (_follow_node_order); retried with backoff till then.
            raise TemporaryError(
                "router: dynamo: waiting for the router replica's address", delay=5
            )
    raise TemporaryError("router: dynamo: the router replica is not running", delay=5)


def _master_ip(ctx: WorkerContext, job: Job) -> str:
    run = ctx.store.get_run(job.run_id)
    for other in ctx.store.jobs_of(run):
        if other.replica_num == job.replica_num and other.job_num == 0:
            if other.pod_ip:
                return other.pod_ip
            if other.status.is_finished:
                break
            raise TemporaryError("waiting for the master node (rank 0) to get its IP", delay=1)
    raise TemporaryError("the master node of this run is gone", delay=5)


def _ssh_keys(ctx: WorkerContext, user_name: str, conf: Any) -> tuple[str, ...]:
    user = ctx.store.get_user(user_name)
    keys = [user.ssh_public_key] if user and user.ssh_public_key else []
    berth_key = ctx.store.get_blob("berth-ssh-public-key")
    if berth_key and berth_key.get("key"):
        keys.append(str(berth_key["key"]))
    return tuple(keys)


def _create_or_adopt(
    ctx: WorkerContext,
    cluster: Cluster,
    kind: str,
    body: dict[str, Any],
    job: Job,
    *,
    per_run: bool = False,
) -> str | None:
    """Create the object, or adopt the one of that name if it is this job's; its uid."""
    k = cluster.kube
    create, read, delete = object_verbs(k, kind)
    try:
        # The created object is not read into client models: their deserialisation
        # (a V1Pod is ms of CPU under the GIL) was most of the provisioning thread's
        # work in a burst (bench scenario 2). Only its uid is read.
        return uid_of(k.call_bytes(create, cluster.namespace, body))
    except KubeConflict:
        pass
    name = body["metadata"]["name"]
    try:
        existing = k.call(read, name, cluster.namespace)
    except KubeNotFound:
        raise TemporaryError(
            f"{kind} {name} was being deleted; creating it again", delay=1
        ) from None
    labels = existing.metadata.labels or {}
    owner_key, owner = (kube.LABEL_RUN, job.run_name) if per_run else (kube.LABEL_JOB, job.id)
    ours = labels.get(owner_key) == owner and labels.get(kube.LABEL_PROJECT) == job.project
    if ours and not (kind == "pod" and _older_attempt(labels, job)):
        return str(existing.metadata.uid) if existing.metadata.uid else None
    leftover = _leftover_of(ctx, labels, job, kind)
    if leftover is None:
        raise KubeError(f"{kind} {name} exists but was not created by Berth for this job")
    if existing.metadata.deletion_timestamp is None:
        with contextlib.suppress(KubeNotFound):
            k.call(delete, name, cluster.namespace, grace_period_seconds=0)
    raise TemporaryError(f"waiting for {leftover}'s {kind} {name} to be deleted", delay=1)


def _leftover_of(ctx: WorkerContext, labels: dict[str, str], job: Job, kind: str) -> str | None:
    """Whose leftover an object holding one of ``job``'s names is, if this job may delete it.

    Names come from the run's name (shared/kube/names.py), so a run submitted again under
    a finished run's name meets that run's kept pod (the log collector's source) and
    secret, and a retried job can meet its previous attempt's pod still terminating.
    """
    if (
        labels.get(kube.LABEL_MANAGED) != kube.MANAGED_BY
        or labels.get(kube.LABEL_PROJECT) != job.project
        or labels.get(kube.LABEL_RUN) != job.run_name
    ):
        return None
    other_id = labels.get(kube.LABEL_JOB, "")
    if other_id == job.id:
        return "the previous attempt" if kind == "pod" and _older_attempt(labels, job) else None
    other = ctx.store.find_job(other_id) if other_id else None
    if other is not None and not other.status.is_finished:
        return None  # a live job's (names are refused while a run of that name is active)
    if other is not None and kind == "pod" and not _output_collected(ctx, other, labels):
        raise TemporaryError("waiting for the previous run's output to be collected", delay=2)
    return f"the previous run named {job.run_name!r}"


def _older_attempt(labels: Mapping[str, str], job: Job) -> bool:
    attempt = kube.attempt_of(labels)
    return attempt is not None and attempt < job.attempt


_COLLECT_WAIT_S = 30.0
"""How long a name's new run waits for the collector to finish the previous run's output
before deleting its pod anyway, seconds (the collector marks an ended container's output
complete within ``logs.drain_s`` of its end; a collector that is not running must not
block the name for longer)."""


def _output_collected(ctx: WorkerContext, other: Job, labels: dict[str, str]) -> bool:
    """Whether the collector is done with that pod's output, or not reading it at all."""
    if time.time() - other.updated_at > _COLLECT_WAIT_S:
        return True
    attempt = kube.attempt_of(labels)
    if attempt is None:
        return True
    try:
        logs = LogStore(ctx.store, cap_bytes=0)
        if attempt not in logs.attempts(other.id):
            return True  # never followed (its container never started, or no collector)
        return logs.meta(other.id, attempt).done
    except StoreError:
        return True


def _record_pod(
    ctx: WorkerContext,
    job_id: str,
    pod_name: str,
    created: dict[str, str | None],
    attempt: int,
    ssh_secret_name: str | None,
) -> None:
    """Record the job's pod, its SSH Secret, and the uids of what was made for it when
    all are known."""
    known = {key: uid for key, uid in created.items() if uid}
    for _ in range(_CAS_ATTEMPTS):
        job = ctx.store.get_job(job_id)
        if job.attempt != attempt:
            record = job.created, job.created_attempt  # a later attempt's: left as it is
        elif len(known) != len(created):
            record = {}, 0  # a uid unknown: teardown lists by label instead
        else:
            record = known, attempt
        if (
            job.pod_name == pod_name
            and job.ssh_secret == ssh_secret_name
            and (job.created, job.created_attempt) == record
        ):
            return
        job.pod_name = pod_name
        job.ssh_secret = ssh_secret_name
        job.created, job.created_attempt = record
        if ctx.store.save_job(
            job,
            Event(at=time.time(), kind="info", job=job.job_num, message=f"pod {pod_name} created"),
        ):
            return
