"""Submitting, reading, stopping and deleting runs."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from functools import partial
from typing import Any

import kombu.exceptions
import redis
from celery import Celery

from api.services.names import random_run_name
from api.services.namespace_quotas import check_namespace_quota
from api.services.offers import OffersPublic, offers_for
from api.services.volumes import check_run_volumes
from shared import tasks
from shared.clusters import ClusterRegistry
from shared.configuration import AnyRunConfiguration
from shared.configuration.groups import group_configuration, groups_differ
from shared.configuration.parse import configuration_from_mapping, parse_run_configuration
from shared.errors import ConfigError, ConflictError, ForbiddenError, NotFoundError, StoreError
from shared.placement.fleets import allowed_nodes, fleet_blocks, instance_nodes
from shared.placement.requests import request_for
from shared.policy import access, pod_security
from shared.queueing import teardowns
from shared.queueing.wake import wake_scheduler
from shared.server_features import check_server_features
from shared.settings import Settings
from shared.state import code as code_archive
from shared.state import secrets
from shared.state.inventory_store import load_inventory
from shared.state.jobs import jobs_for
from shared.state.lifecycle import can_move
from shared.state.records import Event, Job, Project, Run, RunStatus, User
from shared.state.store import Store

log = logging.getLogger(__name__)

_NAME_ATTEMPTS = 5  # random names clash rarely; a few tries make it vanishingly rare


def submit_run(
    store: Store,
    celery: Celery,
    *,
    project: Project,
    user: User,
    configuration: str | dict[str, Any],
    clusters: ClusterRegistry,
    code: str | None = None,
    settings: Settings | None = None,
) -> tuple[Run, list[Job]]:
    """Validate, record the run and its jobs, and enqueue scheduling. Returns at once.

    Without ``settings``, fields that need a server setting (``nvcc``,
    ``utilization_policy``) are refused as on a server that lacks it."""
    conf = parse_run_request(configuration)
    security = check_submission(store, clusters, project, conf, code=code, settings=settings)
    explicit = getattr(conf, "name", None)
    for _ in range(1 if explicit else _NAME_ATTEMPTS):
        run = Run(
            id=uuid.uuid4().hex,
            project=project.name,
            name=explicit or random_run_name(),
            user=user.name,
            configuration=conf.model_dump(mode="json"),
            configuration_type=conf.type,
            priority=getattr(conf, "priority", None) or 0,
            pod_security=security.level,
            code=code,
        )
        jobs = jobs_for(run, conf)
        run.job_ids = [j.id for j in jobs]
        event = Event(
            at=run.submitted_at, kind="status", status=RunStatus.SUBMITTED, message="submitted"
        )
        try:
            store.create_run(run, jobs, event)
        except ConflictError:
            if explicit:
                same = _same_submission(store, run)
                if same is not None:
                    return same
                raise
            continue
        _wake(store, celery, run.id)
        return run, jobs
    raise ConflictError("could not pick a free run name; set name: in the configuration")


def _wake(store: Store, celery: Celery, run_id: str) -> None:
    """Ask for a scheduling pass for a run already recorded (and acknowledged).

    The run is taken whatever happens here: if Redis or the broker fails now (a
    failover under way), the 202 still holds and beat's sweep asks for the pass
    within seconds, so the error is logged, not answered as 5xx (which a client
    would read as "maybe not taken")."""
    try:
        wake_scheduler(store, celery, run_id)
    except (StoreError, kombu.exceptions.KombuError, redis.RedisError, OSError) as e:
        log.warning("run %s recorded; its scheduling pass waits for the sweep: %s", run_id, e)


def check_submission(
    store: Store,
    clusters: ClusterRegistry,
    project: Project,
    conf: Any,
    *,
    code: str | None,
    settings: Settings | None,
) -> pod_security.LevelDecision:
    """Every check a run must pass before it is recorded (or scheduled); its security level."""
    check_server_features(conf, settings)
    _check_env_values(conf)
    code_archive.check_submission(store, conf, code)
    secrets.check_submission(store, project.name, conf)
    # First: no project setting can make a run the namespace forbids possible.
    security = _pod_security(clusters, project.name, conf)
    check_run_volumes(store, clusters, project.name, conf)
    _check_privileged(clusters, project.name, conf)
    _check_backends(store, clusters, project.name, conf)
    for job_conf in _group_confs(conf):
        check_namespace_quota(store, clusters, project.name, job_conf)
    return security


def _check_env_values(conf: Any) -> None:
    """A value-less ``env`` entry (``env: [HF_TOKEN]``) is the CLI's to fill from the
    submitter's shell; reaching the server without one, it would be a pod quietly
    lacking the variable, so it is refused naming it."""
    missing = [k for k, v in (getattr(conf, "env", None) or {}).items() if v is None]
    if missing:
        raise ConfigError(
            f"env {', '.join(missing)}: no value; berth apply fills a bare name from your"
            " shell, an API client must send the value (or a ${{ secrets.NAME }})",
            field="env",
        )


def _check_backends(store: Store, clusters: ClusterRegistry, project: str, conf: Any) -> None:
    """Where nodes cannot be read (namespace-only mode) a cloud is asked for by a label
    only some clouds' node groups carry: refuse the others now, not at provisioning."""
    where = request_for(conf).where
    if where is None or not where.backends or _reads_nodes(store, clusters, project):
        return
    try:
        where.backend_terms()
    except ValueError as e:
        raise ConfigError(str(e), field="backends") from e


def _group_confs(conf: Any) -> list[Any]:
    """The configuration as each group's jobs run it, when groups ask for different
    resources (each pod must pass the namespace's LimitRanges and quotas); else itself."""
    if not groups_differ(conf):
        return [conf]
    return [group_configuration(conf, g.name) for g in conf.groups]


def _reads_nodes(store: Store, clusters: ClusterRegistry, project: str) -> bool:
    return access.access_for(store, clusters, project, recheck_s=None).mode == access.Mode.CLUSTER


class RunPlanPublic(OffersPublic):
    """The offers, and the Pod Security level the run's pods would be built for."""

    pod_security: str = "privileged"
    pod_security_source: str = ""
    """What decided the level: the server config or the namespace's enforce label."""


def plan_run(
    store: Store,
    clusters: ClusterRegistry,
    *,
    project: Project,
    configuration: str | dict[str, Any],
    settings: Settings | None = None,
) -> RunPlanPublic:
    conf = parse_run_request(configuration)
    check_server_features(conf, settings)
    # First: no project setting can make a run the namespace forbids possible.
    security = _pod_security(clusters, project.name, conf)
    check_run_volumes(store, clusters, project.name, conf)
    _check_privileged(clusters, project.name, conf)
    _check_backends(store, clusters, project.name, conf)
    for job_conf in _group_confs(conf):
        check_namespace_quota(store, clusters, project.name, job_conf)
    request = request_for(conf)
    fleets = getattr(conf, "fleets", None)
    if fleets:
        inventory = load_inventory(store, clusters, project.name)
        request = replace(
            request,
            allowed_nodes=allowed_nodes(store, inventory, project.name, fleets),
            # The plan shows what the run would take: whole blocks on a blocked fleet.
            blocks=fleet_blocks(store, project.name, fleets),
        )
    instances = getattr(conf, "instances", None)
    if instances and _reads_nodes(store, clusters, project.name):
        inventory = load_inventory(store, clusters, project.name)
        pinned = instance_nodes(store, inventory, project.name, instances)
        allowed = request.allowed_nodes
        request = replace(request, allowed_nodes=pinned if allowed is None else allowed & pinned)
    offers = offers_for(store, clusters, project.name, request)
    return RunPlanPublic(
        **offers.model_dump(),
        pod_security=security.level,
        pod_security_source=security.source,
    )


def _same_submission(store: Store, run: Run) -> tuple[Run, list[Job]] | None:
    """The run ``run`` repeats (same name, user, configuration and code), if any: an
    active one, or one answered 503 but kept, which may have finished since.

    A client that retries after a 503 cannot know whether its first request was
    recorded (Redis may have applied it just before it went away): sending the same
    run again answers with the run it made, instead of 409 "name in use".
    """
    try:
        existing = store.run_by_name(run.project, run.name)
    except NotFoundError:
        return None
    if not run.repeats(existing):
        return None
    if existing.status.is_finished and not store.refused_but_kept(existing):
        return None  # a finished run's name is free for a new run
    # The first attempt may have been left on the primary unacknowledged: this 202 is
    # the first promise for it, so it waits for the replicas as a new run's does.
    store.confirm_replicated("run")
    store.forget_refusal(existing)
    return existing, store.jobs_of(existing)


def stop_run(store: Store, celery: Celery, run: Run, *, abort: bool) -> Run:
    """Ask every job to stop; teardown does the deleting. Stopping twice is harmless."""
    if run.status.is_finished:
        return run
    for _ in range(10):  # compare-and-set: retry on a concurrent worker update
        run.stop_requested = True
        run.abort = run.abort or abort
        word = "abort" if abort else "stop"
        event = Event(at=time.time(), kind="info", message=f"{word} requested by the user")
        if can_move(run.status, RunStatus.TERMINATING):
            run.status = RunStatus.TERMINATING
            run.reason = f"{word} requested"
            event = Event(
                at=event.at,
                kind="status",
                status=run.status,
                message=f"{word} requested by the user",
            )
        if store.save_run(run, event):
            break
        run = store.get_run(run.id)
        if run.status.is_finished:
            return run
    # Drained in batches; marked queued, so beat's sweep does not send each again while
    # it waits its turn.
    teardowns.request_teardown(store, celery, run.job_ids)
    return run


def delete_run(store: Store, celery: Celery, run: Run) -> None:
    """Hand a finished run to teardown, which deletes its objects and then its records."""
    if not run.status.is_finished:
        raise ConflictError(
            f"run {run.name!r} is {run.status}; stop it first (berth stop {run.name})", field="name"
        )
    tasks.send(celery, tasks.PURGE_RUN, run.id)


def _check_privileged(clusters: ClusterRegistry, project: str, conf: Any) -> None:
    """``privileged: true`` (or ``docker: true``, which needs it) makes the container root
    on its node: the project must allow it."""
    field = pod_security.privileged_field(conf)
    if field is None:
        return
    allowed = any(p.name == project and p.allow_privileged for p in clusters.server.projects)
    if not allowed:
        why = " (Docker-in-Docker runs a privileged container)" if field.endswith("docker") else ""
        raise ForbiddenError(
            f"{field}: true{why} is not allowed in project {project!r}; an operator can set"
            " allow_privileged: true for it in the server config",
            field=field,
        )


def _pod_security(clusters: ClusterRegistry, project: str, conf: Any) -> pod_security.LevelDecision:
    """The level the run's pods are built for; ForbiddenError naming the field if the
    run cannot work at it. One namespace read (with the client's timeout) per cluster of
    the project: the strictest level of them, since the run may start in any."""
    decisions = [
        pod_security.level_for(
            cluster.kube,
            cluster.namespace,
            configured=cluster.backend.pod_security,
            # The label as read in the last few seconds (a failed read is not kept).
            read_label=partial(
                cluster.recent.get,
                "pod-security-label",
                partial(pod_security.namespace_level, cluster.kube, cluster.namespace),
            ),
        )
        for cluster in (clusters.for_project(project, n) for n in clusters.names_of(project))
    ]
    decision = max(decisions, key=lambda d: pod_security.LEVELS.index(d.level))
    pod_security.check(conf, decision)
    return decision


def parse_run_request(configuration: str | dict[str, Any]) -> AnyRunConfiguration:
    if isinstance(configuration, str):
        return parse_run_configuration(configuration)
    conf = configuration_from_mapping(configuration)
    if conf.type == "fleet" or conf.type == "volume":  # two tests: mypy narrows each
        raise ConfigError(
            f"type: {conf.type} goes to the {conf.type}s endpoint, not runs", field="type"
        )
    return conf
