"""Volumes: apply, list and delete."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ClustersDep, CurrentProject, CurrentUser, StoreDep
from api.schemas import RunCreate
from api.services import volumes as volume_service

router = APIRouter(prefix="/api/projects/{project}/volumes", tags=["volumes"])


@router.post("")
def apply_volume(
    body: RunCreate,
    project: CurrentProject,
    user: CurrentUser,
    store: StoreDep,
    clusters: ClustersDep,
) -> volume_service.VolumePublic:
    """Create a volume (and its claim), or confirm one applied before with the same file."""
    return volume_service.apply_volume(
        store, clusters, project=project.name, user=user.name, configuration=body.configuration
    )


@router.get("")
def list_volumes(
    project: CurrentProject, store: StoreDep, clusters: ClustersDep
) -> list[volume_service.VolumePublic]:
    return volume_service.list_volumes(store, clusters, project.name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_volume(
    name: str, project: CurrentProject, store: StoreDep, clusters: ClustersDep
) -> None:
    """Refused while an active run mounts the volume; deletes the claim Berth created."""
    volume_service.delete_volume(store, clusters, project.name, name)
