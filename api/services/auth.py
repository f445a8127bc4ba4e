"""Users, tokens and the first-start bootstrap."""

from __future__ import annotations

import secrets

from shared.records import Project, User
from shared.store import Store, token_sha256

DEFAULT_PROJECT = "main"
ADMIN = "admin"


def bootstrap(store: Store, *, admin_token: str | None) -> str | None:
    """On first start create the admin user and the ``main`` project.

    Returns the admin token when it was just created (to be printed once, as
    dstack does), else None. Safe to run on every start and from many replicas:
    it only fills in what is missing.
    """
    created: str | None = None
    if store.get_user(ADMIN) is None:
        token = admin_token or secrets.token_urlsafe(24)
        store.put_user(User(name=ADMIN, token_sha256=token_sha256(token), is_admin=True))
        created = token
    if store.get_project(DEFAULT_PROJECT) is None:
        store.put_project(Project(name=DEFAULT_PROJECT, members=[ADMIN]))
    return created


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
