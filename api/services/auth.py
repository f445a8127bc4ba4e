"""Users, tokens and the first-start bootstrap."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from shared.errors import AuthError, NotFoundError
from shared.state.records import Project, User
from shared.state.store import Store, token_sha256

DEFAULT_PROJECT = "main"
ADMIN = "admin"


def bootstrap(store: Store, *, admin_token: str | None, projects: Sequence[str] = ()) -> str | None:
    """On first start create the admin user, the ``main`` project and the server
    config's projects (with the admin as a member).

    Returns the admin token when it was just created (to be printed once, as
    dstack does), else None. Safe to run on every start and from many replicas:
    it only fills in what is missing.
    """
    created: str | None = None
    if store.get_user(ADMIN) is None:
        token = admin_token or secrets.token_urlsafe(24)
        store.put_user(User(name=ADMIN, token_sha256=token_sha256(token), is_admin=True))
        created = token
    for name in dict.fromkeys([DEFAULT_PROJECT, *projects]):
        if store.get_project(name) is None:
            store.put_project(Project(name=name, members=[ADMIN]))
    return created


def user_for_token(store: Store, token: str | None) -> User:
    """The user a bearer token belongs to; AuthError (401) for none or an unknown one."""
    if not token:
        raise AuthError("missing bearer token: pass 'Authorization: Bearer <token>'")
    user = store.user_by_token(token)
    if user is None:
        raise AuthError("unknown token: check ~/.berth/config.yml or ask an admin for a new one")
    return user


def may_see(user: User, project: Project) -> bool:
    return user.is_admin or user.name in project.members


def visible_project(store: Store, user: User, name: str) -> Project:
    """Project ``name`` if ``user`` may see it.

    A project the caller is not in looks exactly like one that does not exist.
    """
    found = store.get_project(name)
    if found is None or not may_see(user, found):
        raise NotFoundError(f"project {name!r} not found", field="project")
    return found


def create_user(store: Store, name: str, *, projects: list[str]) -> str:
    """Create a user with a fresh token and add it to ``projects``; return the token."""
    token = secrets.token_urlsafe(24)
    store.put_user(User(name=name, token_sha256=token_sha256(token)))
    for project_name in projects:
        project = store.get_project(project_name) or Project(name=project_name)
        if name not in project.members:
            project.members.append(name)
        store.put_project(project)
    return token
