"""Applying a configuration with ``schedule``, listing and deleting schedules.

The schedule passes every check a run passes at submission, then waits for its
cron times (:mod:`shared.state.schedules`); beat starts its runs.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from pydantic import BaseModel

from api.services import runs as run_service
from api.services.names import random_run_name
from shared.clusters import ClusterRegistry
from shared.settings import Settings
from shared.state import schedules
from shared.state.records import Job, Project, Run, User
from shared.state.schedules import ScheduledRun
from shared.state.store import Store


class SchedulePublic(BaseModel):
    project: str
    name: str
    user: str
    type: str
    status: str = "scheduled"
    crons: list[str]
    next_start_at: float
    """When beat starts its next run (epoch seconds); ``berth ps`` shows it."""
    last_start_at: float | None

    @classmethod
    def of(cls, record: ScheduledRun, *, now: float) -> SchedulePublic:
        return cls(
            project=record.project,
            name=record.name,
            user=record.user,
            type=record.configuration_type,
            crons=record.crons,
            next_start_at=schedules.next_start(record.crons, after=max(now, record.created_at)),
            last_start_at=record.last_tick,
        )


def apply(
    store: Store,
    celery: Celery,
    *,
    project: Project,
    user: User,
    configuration: str | dict[str, Any],
    clusters: ClusterRegistry,
    code: str | None = None,
    settings: Settings | None = None,
) -> tuple[Run, list[Job]] | ScheduledRun:
    """Submit the run, or keep its schedule when the configuration has one."""
    conf = run_service.parse_run_request(configuration)
    schedule = getattr(conf, "schedule", None)
    if schedule is None:
        return run_service.submit_run(
            store,
            celery,
            project=project,
            user=user,
            configuration=configuration,
            clusters=clusters,
            code=code,
            settings=settings,
        )
    security = run_service.check_submission(
        store, clusters, project, conf, code=code, settings=settings
    )
    name = getattr(conf, "name", None) or random_run_name()
    record = ScheduledRun(
        project=project.name,
        name=name,
        user=user.name,
        configuration=conf.model_dump(mode="json") | {"name": name},
        configuration_type=conf.type,
        crons=schedule.cron,
        code=code,
        priority=getattr(conf, "priority", None) or 0,
        pod_security=security.level,
    )
    schedules.put(store, record)
    return record


def list_schedules(store: Store, project: Project) -> list[SchedulePublic]:
    now = time.time()
    return [SchedulePublic.of(r, now=now) for r in schedules.list_all(store, project.name)]


def delete_schedule(store: Store, project: Project, name: str) -> None:
    schedules.get(store, project.name, name)  # NotFoundError naming it
    schedules.delete(store, project.name, name)
