"""``/health`` (public liveness) and ``/api/status`` (what a member may know)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser, StoreDep
from api.schemas import Health, Status
from shared import ssh
from shared.errors import StoreError
from shared.store import Store

router = APIRouter(tags=["health"])

# Enough for a probe or a dashboard; hostnames, users and keys are for members only.
_PUBLIC_FIELDS = ("status", "reason", "checked_at")


@router.get("/health")
def health(store: StoreDep) -> Health:
    """Liveness and what the server depends on; needs no token."""
    redis_state, records = _read(store)
    return Health(
        status="ok" if redis_state == "ok" else "degraded",
        redis=redis_state,
        jump_hosts={
            key: {field: record.get(field) for field in _PUBLIC_FIELDS}
            for key, record in records.items()
        },
    )


@router.get("/api/status")
def status(store: StoreDep, user: CurrentUser) -> Status:
    """Redis and the jump hosts of the caller's projects (every one for an admin)."""
    redis_state, records = _read(store)
    hosts = []
    for raw in records.values():
        record = ssh.JumpHostRecord.model_validate(raw)
        if user.is_admin or any(_member(store, user.name, p) for p in record.projects):
            if not user.is_admin:
                record.authorized_users = []
            hosts.append(record)
    return Status(redis=redis_state, jump_hosts=sorted(hosts, key=lambda r: r.id))


def _member(store: Store, user: str, project: str) -> bool:
    found = store.get_project(project)
    return found is not None and user in found.members


def _read(store: Store) -> tuple[str, dict[str, Any]]:
    try:
        store.ping()
        return "ok", store.get_blob(ssh.JUMP_HOSTS_BLOB) or {}
    except StoreError as e:
        return f"down: {e}", {}
