"""Project secrets: members see the names, admins set and delete them; values never leave."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from api.deps import AdminUser, CurrentProject, SettingsDep, StoreDep
from shared.state import secrets

router = APIRouter(prefix="/api/projects/{project}/secrets", tags=["secrets"])

SecretName = Annotated[str, Path(max_length=128, pattern=secrets.SECRET_NAME.pattern)]


class SecretPublic(BaseModel):
    name: str
    updated_at: float


class SecretSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: SecretStr = Field(description="The plain value; stored encrypted, never shown again.")


@router.get("")
def list_secrets(project: CurrentProject, store: StoreDep) -> list[SecretPublic]:
    return [
        SecretPublic(name=s.name, updated_at=s.updated_at)
        for s in secrets.list_names(store, project.name)
    ]


@router.put("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def set_secret(
    name: SecretName,
    body: SecretSet,
    project: CurrentProject,
    _admin: AdminUser,
    store: StoreDep,
    settings: SettingsDep,
) -> None:
    box = secrets.SecretBox(settings.secrets.key)
    secrets.set_value(store, box, project.name, name, body.value.get_secret_value())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(
    name: SecretName, project: CurrentProject, _admin: AdminUser, store: StoreDep
) -> None:
    secrets.delete(store, project.name, name)
