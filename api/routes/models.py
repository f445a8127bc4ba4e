"""``/proxy/models/{project}/...``: dstack's OpenAI-compatible endpoint over services' ``model``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.routes.proxy import TunnelsDep, resolve_service, serve
from api.services import models

router = APIRouter(tags=["proxy"])


@router.get("/proxy/models/{project}/models")
async def list_models(project: str, request: Request, tunnels: TunnelsDep) -> dict[str, Any]:
    """The project's models, as OpenAI lists them."""
    return await run_in_threadpool(
        models.list_models,
        tunnels.store,
        project=project,
        authorization=request.headers.get("authorization"),
    )


@router.post("/proxy/models/{project}/chat/completions")
async def chat_completions(project: str, request: Request, tunnels: TunnelsDep) -> Response:
    """Send the chat request to the service serving its ``model``; stream its answer back."""
    authorization = request.headers.get("authorization")
    body = await request.body()  # read once to route; forwarded from Starlette's copy
    run, path = await run_in_threadpool(
        models.service_for_model,
        tunnels.store,
        project=project,
        body=body,
        authorization=authorization,
    )
    target = await run_in_threadpool(
        resolve_service, tunnels.store, project=project, run=run, authorization=authorization
    )
    return await serve(request, tunnels, target, path=path)
