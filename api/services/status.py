"""What ``/health`` and ``/api/status`` tell about the server and its jump hosts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from api.services.auth import may_see
from shared import ssh
from shared.errors import StoreError
from shared.records import User
from shared.store import Store


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
