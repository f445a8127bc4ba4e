"""A cap on the size of request bodies sent to Berth's API (``api.max_body_bytes``).

Uvicorn reads any body it is sent, and FastAPI turns a body that fails to
parse into a 400, so the cap is an ASGI middleware in front of both: a
``Content-Length`` over the cap is answered 413 before a byte of the body is
read, and a chunked body is counted as it arrives and answered 413 as soon as
it passes the cap (the app's own answer, if any, is dropped). Only ``/api/``
is capped: the service proxy (``/proxy/...``) carries users' own traffic.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

CAPPED_PREFIX = "/api/"


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, by_suffix: tuple[tuple[str, int], ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.by_suffix = by_suffix
        """Paths ending so get their own cap (a run's code archive is bigger than JSON)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CAPPED_PREFIX):
            await self.app(scope, receive, send)
            return
        cap = next(
            (n for suffix, n in self.by_suffix if scope["path"].endswith(suffix)), self.max_bytes
        )
        length = _content_length(scope)
        if length is not None and length > cap:
            await self._refuse(scope, receive, send, cap)
            return
        seen = 0
        too_large = False
        started = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap and not started:
                    too_large = True
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # ours goes out instead
            started = True
            await send(message)

        await self.app(scope, counted, guarded)
        if too_large:
            await self._refuse(scope, receive, send, cap)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        setting = "api.max_body_bytes" if cap == self.max_bytes else "code.max_bytes"
        response = error_response(
            413, "too_large", f"the request body is larger than {cap} bytes ({setting})"
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: list[tuple[bytes, Any]] = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
