"""What ``/health`` and ``/api/status`` tell about the server and its jump hosts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from api.schemas import BackendAccess
from api.services.auth import may_see
from shared import ssh
from shared.clusters import ClusterRegistry
from shared.errors import BerthError, StoreError
from shared.policy import access
from shared.state import cluster_health
from shared.state.records import User
from shared.state.store import Store


def redis_and_jump_hosts(store: Store) -> tuple[str, list[ssh.JumpHostRecord]]:
    """``ok`` or ``down: why``, and every jump host's last published health."""
    try:
        store.ping()
        blob: dict[str, Any] = store.get_blob(ssh.JUMP_HOSTS_BLOB) or {}
    except StoreError as e:
        return f"down: {e}", []
    return "ok", [ssh.JumpHostRecord.model_validate(raw) for raw in blob.values()]


def count_by_status(records: list[ssh.JumpHostRecord]) -> dict[str, int]:
    """How many jump hosts are ``ok``, ``error`` or ``pending``: all an anonymous caller sees.

    Ids, addresses and reasons name clusters, namespaces, ports and projects.
    """
    return dict(Counter(r.status for r in records))


def visible_jump_hosts(
    store: Store, user: User, records: list[ssh.JumpHostRecord]
) -> list[ssh.JumpHostRecord]:
    """The jump hosts of ``user``'s projects, naming only those projects.

    An admin sees every jump host in full; a member never sees other projects'
    names nor who else may log in.
    """
    if user.is_admin:
        return sorted(records, key=lambda r: r.id)
    visible = []
    for record in records:
        mine = [p for p in record.projects if _member(store, user, p)]
        if mine:
            visible.append(record.model_copy(update={"projects": mine, "authorized_users": []}))
    return sorted(visible, key=lambda r: r.id)


def _member(store: Store, user: User, project: str) -> bool:
    found = store.get_project(project)
    return found is not None and may_see(user, found)


def backend_access(store: Store, clusters: ClusterRegistry, user: User) -> list[BackendAccess]:
    """Each of ``user``'s projects' backend mode, as the workers last found it.

    A backend never asked yet is asked now (SelfSubjectAccessReviews, each with
    the client's timeout); one whose answer cannot be had says why.
    """
    found = []
    down = cluster_health.unreachable(store)
    for project in clusters.server.project_names():
        if not user.is_admin and not _member(store, user, project):
            continue
        try:
            names = clusters.names_of(project)
        except BerthError as e:
            found.append(
                BackendAccess(project=project, namespace="", mode="unknown", reason=e.message)
            )
            continue
        found += [_access_in(store, clusters, project, name, down) for name in names]
    return found


def _access_in(
    store: Store, clusters: ClusterRegistry, project: str, name: str, down: dict[str, str]
) -> BackendAccess:
    try:
        backend = clusters.server.backend_for(project, name)
        namespace = backend.namespace
        known = access.access_for(store, clusters, project, recheck_s=None, cluster=name)
    except BerthError as e:
        return BackendAccess(
            project=project, namespace="", cluster=name, mode="unknown", reason=e.message
        )
    return BackendAccess(
        project=project,
        namespace=namespace,
        cluster=name,
        mode=known.mode.value,
        reason=known.reason,
        checked_at=known.checked_at,
        unreachable=down.get(backend.cluster_key()),
    )
