"""FastAPI dependencies as named types, so route signatures stay short."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.clusters import ClusterRegistry
from shared.errors import AuthError, ForbiddenError, NotFoundError
from shared.records import Project, User
from shared.settings import Settings
from shared.store import Store

_bearer = HTTPBearer(auto_error=False)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _clusters(request: Request) -> ClusterRegistry:
    clusters: ClusterRegistry = request.app.state.clusters
    return clusters


StoreDep = Annotated[Store, Depends(_store)]
ClustersDep = Annotated[ClusterRegistry, Depends(_clusters)]
CeleryDep = Annotated[Celery, Depends(_celery)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _current_user(
    store: StoreDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if creds is None:
        raise AuthError("missing bearer token: pass 'Authorization: Bearer <token>'")
    user = store.user_by_token(creds.credentials)
    if user is None:
        raise AuthError("unknown token: check ~/.berth/config.yml or ask an admin for a new one")
    return user


CurrentUser = Annotated[User, Depends(_current_user)]


def _admin(user: CurrentUser) -> User:
    # A dependency, not a check in the route body: it runs before the body is
    # validated, so a non-admin learns nothing about what the endpoint accepts.
    if not user.is_admin:
        raise ForbiddenError("only admins may do this; ask an admin")
    return user


AdminUser = Annotated[User, Depends(_admin)]


def _project(
    store: StoreDep, user: CurrentUser, project: Annotated[str, Path(max_length=64)]
) -> Project:
    found = store.get_project(project)
    # A project the caller is not in looks exactly like one that does not exist.
    if found is None or (user.name not in found.members and not user.is_admin):
        raise NotFoundError(f"project {project!r} not found", field="project")
    return found


CurrentProject = Annotated[Project, Depends(_project)]
