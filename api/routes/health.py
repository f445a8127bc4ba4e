"""``/health`` (public liveness) and ``/api/status`` (what a member may know)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ClustersDep, CurrentUser, StoreDep
from api.schemas import Health, Status
from api.services import status as status_service

router = APIRouter(tags=["health"])


@router.get("/health")
def health(store: StoreDep) -> Health:
    """Liveness and what the server depends on; needs no token."""
    redis_state, records = status_service.redis_and_jump_hosts(store)
    return Health(
        status="ok" if redis_state == "ok" else "degraded",
        redis=redis_state,
        jump_hosts=status_service.count_by_status(records),
    )


@router.get("/api/status")
def status(store: StoreDep, clusters: ClustersDep, user: CurrentUser) -> Status:
    """Redis, the jump hosts and the backends' access modes of the caller's projects."""
    redis_state, records = status_service.redis_and_jump_hosts(store)
    return Status(
        redis=redis_state,
        jump_hosts=status_service.visible_jump_hosts(store, user, records),
        backends=status_service.backend_access(store, clusters, user),
    )
