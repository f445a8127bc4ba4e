"""Runs: apply, list, get, stop, delete, logs and events."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse

from api.deps import (
    CeleryDep,
    ClustersDep,
    CurrentProject,
    CurrentUser,
    LogStoreDep,
    SettingsDep,
    StoreDep,
)
from api.schemas import EventPublic, RunCreate, RunPublic, RunStop
from api.services import events as event_service
from api.services import logs as log_service
from api.services import run_history
from api.services import runs as run_service
from api.services import schedules as schedule_service
from shared.queueing import positions
from shared.state.records import RunStatus
from shared.state.schedules import ScheduledRun

router = APIRouter(prefix="/api/projects/{project}/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def apply_run(
    body: RunCreate,
    project: CurrentProject,
    user: CurrentUser,
    store: StoreDep,
    celery: CeleryDep,
    clusters: ClustersDep,
    settings: SettingsDep,
) -> RunPublic | schedule_service.SchedulePublic:
    """Validate and accept a run; scheduling happens in the background. A configuration
    with ``schedule`` is kept instead, and beat starts its runs at the cron times."""
    applied = schedule_service.apply(
        store,
        celery,
        project=project,
        user=user,
        configuration=body.configuration,
        clusters=clusters,
        code=body.code,
        settings=settings,
    )
    if isinstance(applied, ScheduledRun):
        return schedule_service.SchedulePublic.of(applied, now=time.time())
    run, jobs = applied
    return RunPublic.of(run, jobs)


@router.post("/plan")
def plan_run(
    body: RunCreate,
    project: CurrentProject,
    store: StoreDep,
    clusters: ClustersDep,
    settings: SettingsDep,
) -> run_service.RunPlanPublic:
    """The offers a configuration would get now, and the Pod Security level its pods
    would be built for, without submitting it."""
    return run_service.plan_run(
        store, clusters, project=project, configuration=body.configuration, settings=settings
    )


@router.get("")
def list_runs(
    project: CurrentProject,
    store: StoreDep,
    response: Response,
    all: Annotated[bool, Query(description="Include finished runs.")] = False,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
    prefix: Annotated[str | None, Query(max_length=100, description="Name prefix.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="From the X-Berth-Next-Cursor of the previous page."),
    ] = None,
) -> list[RunPublic]:
    """Active runs (every one, however long the history), or with ``all`` or
    ``status`` a page of history, newest first; ``X-Berth-Next-Cursor`` continues it."""
    runs, next_cursor = run_history.list_runs(
        store,
        project.name,
        # An active status is answered from the active runs, however old they are.
        history=all or (status_filter is not None and status_filter.is_finished),
        status=status_filter,
        prefix=prefix,
        limit=limit,
        cursor=cursor,
    )
    if next_cursor is not None:
        response.headers[run_history.NEXT_CURSOR_HEADER] = next_cursor
    runs = positions.shown(store, runs)
    jobs = store.jobs_of_runs(runs)
    idle = run_history.idle_stop_in(store, runs, now=time.time())
    return [
        RunPublic.of(r, jobs[r.id]).model_copy(update={"idle_stop_in_s": idle.get(r.id)})
        for r in runs
    ]


@router.get("/{name}")
def get_run(name: str, project: CurrentProject, store: StoreDep) -> RunPublic:
    (run,) = positions.shown(store, [store.run_by_name(project.name, name)])
    return RunPublic.of(run, store.jobs_of(run))


@router.post("/{name}/stop")
def stop_run(
    name: str, body: RunStop, project: CurrentProject, store: StoreDep, celery: CeleryDep
) -> RunPublic:
    run = run_service.stop_run(
        store, celery, store.run_by_name(project.name, name), abort=body.abort
    )
    return RunPublic.of(run, store.jobs_of(run))


@router.delete("/{name}", status_code=status.HTTP_202_ACCEPTED)
def delete_run(name: str, project: CurrentProject, store: StoreDep, celery: CeleryDep) -> None:
    """Accepted: teardown deletes the run's pods, services and secrets, then its records."""
    run_service.delete_run(store, celery, store.run_by_name(project.name, name))


@router.get("/{name}/events")
def run_events(
    name: str,
    project: CurrentProject,
    store: StoreDep,
    clusters: ClustersDep,
    after: Annotated[str, Query(pattern=r"^(-|\d+-\d+)$")] = "-",
    kubernetes: bool = False,
) -> list[EventPublic]:
    """Berth's events of the run; with ``kubernetes``, its pods' events too, in time order."""
    run = store.run_by_name(project.name, name)
    return event_service.run_events(store, clusters, run, after=after, kubernetes=kubernetes)


@router.get("/{name}/logs", response_class=StreamingResponse)
def run_logs(
    name: str,
    project: CurrentProject,
    store: StoreDep,
    logs: LogStoreDep,
    follow: bool = False,
    job: Annotated[int, Query(ge=0)] = 0,
    replica: Annotated[int, Query(ge=0)] = 0,
    attempt: Annotated[int | None, Query(ge=1)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    tail: Annotated[int | None, Query(ge=0)] = None,
    timestamps: bool = False,
) -> StreamingResponse:
    """The job's output as plain text, from the log store; ``follow`` streams until it
    is complete. Headers say how many attempts the job had and which one is served."""
    run = store.run_by_name(project.name, name)
    request = log_service.LogRequest(
        job_num=job,
        replica_num=replica,
        attempt=attempt,
        follow=follow,
        since_ns=log_service.since_ns(since),
        tail=tail,
        timestamps=timestamps,
    )
    answer = log_service.job_logs(store, logs, run, request)
    headers = {"X-Berth-Attempts": str(answer.attempts), "X-Berth-Attempt": str(answer.attempt)}
    return StreamingResponse(answer.body, media_type="text/plain", headers=headers)
