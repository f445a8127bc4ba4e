"""Schedules: the configurations beat starts at their cron times (``schedule``)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import CurrentProject, StoreDep
from api.services import schedules as schedule_service

router = APIRouter(prefix="/api/projects/{project}/schedules", tags=["runs"])


@router.get("")
def list_schedules(
    project: CurrentProject, store: StoreDep
) -> list[schedule_service.SchedulePublic]:
    """The project's schedules, each with its next start."""
    return schedule_service.list_schedules(store, project)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(name: str, project: CurrentProject, store: StoreDep) -> None:
    """Start no more runs of this schedule (a run it started goes on)."""
    schedule_service.delete_schedule(store, project, name)
