"""Users: admins create them (with project membership); users set their SSH key."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AdminUser, CurrentUser, StoreDep
from api.services import auth
from shared.errors import ConflictError

router = APIRouter(prefix="/api/users", tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    projects: list[str] = Field(default_factory=list, max_length=100)


class UserCreated(BaseModel):
    name: str
    token: str
    """Shown once; Berth keeps only its hash."""


class SshKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(
        pattern=r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$"
    )


class Me(BaseModel):
    name: str
    is_admin: bool
    ssh_public_key: str | None
    """The key run pods and the jump host trust for this user; None until one is set."""


@router.get("/me")
def read_me(user: CurrentUser) -> Me:
    """Who this token is, and the SSH key on file (so the CLI can register one if none)."""
    return Me(name=user.name, is_admin=user.is_admin, ssh_public_key=user.ssh_public_key)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, _admin: AdminUser, store: StoreDep) -> UserCreated:
    if store.get_user(body.name) is not None:
        raise ConflictError(f"user {body.name!r} exists", field="name")
    return UserCreated(
        name=body.name, token=auth.create_user(store, body.name, projects=body.projects)
    )


@router.put("/me/ssh-key", status_code=status.HTTP_204_NO_CONTENT)
def set_ssh_key(body: SshKey, user: CurrentUser, store: StoreDep) -> None:
    """The public key dev environments and the jump host trust for this user."""
    user.ssh_public_key = body.public_key.strip()
    store.put_user(user)
