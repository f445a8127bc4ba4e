"""Code: the archive of a run's ``repos`` and ``files``, uploaded before the run."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import CurrentProject, SettingsDep, StoreDep
from shared.state import code

router = APIRouter(prefix="/api/projects/{project}/code", tags=["runs"])

# The body cap of this route is code.max_bytes (api/limits.py), not api.max_body_bytes.
PATH_SUFFIX = "/code"


@router.post("", status_code=201)
async def upload_code(
    request: Request, project: CurrentProject, store: StoreDep, settings: SettingsDep
) -> dict[str, str | int]:
    """A gzipped tar of the run's code (``application/octet-stream``); its sha256, which
    the run's ``code`` then names. The same bytes sent twice are kept once."""
    del project  # membership is what the dependency checks
    data = await request.body()
    digest = code.save(store, data, max_bytes=settings.code.max_bytes, ttl_s=settings.code.ttl_s)
    return {"code": digest, "bytes": len(data)}
