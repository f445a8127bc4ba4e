"""One JSON shape for every error the API returns.

``{"error": {"code": "config_error", "message": "...", "field": "resources.gpu"}}``
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.errors import (
    AuthError,
    BerthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    NotSupportedError,
    TemporaryError,
)

_STATUS: list[tuple[type[BerthError], int, str]] = [
    (NotSupportedError, 422, "not_supported"),
    (ConfigError, 422, "config_error"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (TemporaryError, 503, "unavailable"),
]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# What every authenticated route may answer besides success, for the OpenAPI document:
# clients (and schemathesis) see the real error shape instead of FastAPI's default 422.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "Missing or unknown bearer token"),
        (403, "The token's user may not do this"),
        (404, "No such object, or not visible to the caller"),
        (409, "The object is in a state that forbids this"),
        (413, "The request body is larger than api.max_body_bytes"),
        (422, "The request or the configuration is invalid; field names the problem"),
        (503, "Redis or the Kubernetes API is unavailable; retry later"),
    )
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BerthError, _berth_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


async def _berth_error(_request: Request, exc: BerthError) -> JSONResponse:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return error_response(status, code, exc.message, exc.field)
    return error_response(500, "internal", exc.message, exc.field)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    return error_response(422, "invalid_request", str(first.get("msg")), ".".join(loc) or None)
