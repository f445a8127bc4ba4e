"""FastAPI dependencies as named types, so route signatures stay short."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services.auth import user_for_token, visible_project
from shared.clusters import ClusterRegistry
from shared.errors import ForbiddenError
from shared.runlogs.store import LogStore
from shared.settings import Settings
from shared.state.records import Project, User
from shared.state.store import Store

_bearer = HTTPBearer(auto_error=False)

# The dependencies that only read app.state are coroutines: FastAPI runs a plain
# function dependency in its thread pool, and in a 500-run burst those hand-offs
# (four per request, each a round through anyio's worker threads) cost the API more
# CPU than the submission's own checks and Redis writes. The ones that read Redis
# (the user, the project) stay plain functions, off the event loop.


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _clusters(request: Request) -> ClusterRegistry:
    clusters: ClusterRegistry = request.app.state.clusters
    return clusters


async def _log_store(request: Request) -> LogStore:
    state = request.app.state
    logs: LogStore | None = getattr(state, "log_store", None)
    if logs is None:  # one per app: it holds the registered scripts
        cap = int(state.settings.logs.max_mib_per_attempt * 1024 * 1024)
        logs = state.log_store = LogStore(state.store, cap_bytes=cap)
    return logs


StoreDep = Annotated[Store, Depends(_store)]
LogStoreDep = Annotated[LogStore, Depends(_log_store)]
ClustersDep = Annotated[ClusterRegistry, Depends(_clusters)]
CeleryDep = Annotated[Celery, Depends(_celery)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _current_user(
    store: StoreDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    return user_for_token(store, creds.credentials if creds is not None else None)


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
    return visible_project(store, user, project)


CurrentProject = Annotated[Project, Depends(_project)]
