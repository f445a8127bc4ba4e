from __future__ import annotations

from fastapi import APIRouter

from api.deps import StoreDep
from api.schemas import Health
from shared.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/health")
def health(store: StoreDep) -> Health:
    """Liveness and what the server depends on; needs no token."""
    try:
        store.ping()
        redis_state = "ok"
    except StoreError as e:
        redis_state = f"down: {e}"
    jump_hosts = store.get_blob("jump-hosts") or {}
    return Health(
        status="ok" if redis_state == "ok" else "degraded", redis=redis_state, jump_hosts=jump_hosts
    )
