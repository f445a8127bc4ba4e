"""The API builds every route's state at start, not in the first request that needs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI

from api.app import build_routes, create_app
from shared.settings import Settings


@pytest.fixture
def built() -> Iterator[list[str]]:
    """The paths whose dependencies FastAPI analyses (``get_dependant``) while it is set."""
    seen: list[str] = []
    real: Callable[..., Any] = fastapi.routing.get_dependant  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(str(kwargs.get("path")))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastapi.routing, "get_dependant", counting)
        yield seen


def _first_request(app: FastAPI) -> None:
    # Routes only (the lifespan never runs): the request fails in its dependencies,
    # after FastAPI has matched the route, which is when it builds the route's state.
    async def send() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://berth") as http:
            await http.post("/api/projects/main/runs", json={"configuration": {"type": "task"}})

    asyncio.run(send())


def test_without_the_warm_up_the_first_request_builds_its_routes(built: list[str]) -> None:
    _first_request(create_app(Settings()))
    assert "/api/projects/{project}/runs" in built  # the observation below can see it


def test_after_the_warm_up_the_first_request_builds_nothing(built: list[str]) -> None:
    app = create_app(Settings())
    build_routes(app)
    assert "/api/projects/{project}/runs" in built  # the warm-up built the submission's
    built.clear()
    _first_request(app)
    assert built == []
