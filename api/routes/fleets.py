"""Fleets: apply, list and delete."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ClustersDep, CurrentProject, StoreDep
from api.schemas import RunCreate
from api.services import fleets as fleet_service

router = APIRouter(prefix="/api/projects/{project}/fleets", tags=["fleets"])


@router.post("")
def apply_fleet(
    body: RunCreate, project: CurrentProject, store: StoreDep, clusters: ClustersDep
) -> fleet_service.FleetPublic:
    return fleet_service.apply_fleet(store, clusters, project.name, body.configuration)


@router.get("")
def list_fleets(
    project: CurrentProject, store: StoreDep, clusters: ClustersDep
) -> list[fleet_service.FleetPublic]:
    return fleet_service.list_fleets(store, clusters, project.name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_fleet(name: str, project: CurrentProject, store: StoreDep) -> None:
    fleet_service.delete_fleet(store, project.name, name)
