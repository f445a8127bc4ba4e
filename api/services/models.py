"""dstack's model mapping: services with ``model`` answer OpenAI's API under one project URL.

``/proxy/models/<project>/models`` lists the models of the project's running
services, and ``/proxy/models/<project>/chat/completions`` goes to the service
whose ``model.name`` the request's ``model`` names, at its ``model.prefix``
(``/v1`` by default), as dstack's proxy does for ``format: openai``. The body
is passed on as sent: the service speaks OpenAI's API itself.
"""

from __future__ import annotations

import json
from typing import Any

from api.services.auth import may_see, user_for_token
from shared.errors import AuthError, ConfigError, NotFoundError
from shared.state.records import Run, RunStatus
from shared.state.store import Store

MAX_REQUEST_BYTES = 1 << 20  # a chat request is a few KiB of messages; this is read to route it


def list_models(store: Store, *, project: str, authorization: str | None) -> dict[str, Any]:
    """OpenAI's model list: one entry per running service of ``project`` with a ``model``."""
    _check_member(store, project, authorization)
    data = [
        {
            "id": run.configuration["model"]["name"],
            "object": "model",
            "created": int(run.submitted_at),
            "owned_by": project,
        }
        for run in _model_services(store, project)
    ]
    return {"object": "list", "data": data}


def service_for_model(
    store: Store, *, project: str, body: bytes, authorization: str | None
) -> tuple[str, str]:
    """The run name serving the body's ``model``, and the path to send the request to."""
    _check_member(store, project, authorization)
    name = model_named(body)
    for run in _model_services(store, project):
        model = run.configuration["model"]
        if model["name"] == name:
            prefix = str(model.get("prefix", "/v1")).rstrip("/")
            return run.name, f"{prefix}/chat/completions".lstrip("/")
    raise NotFoundError(f"model {name!r} not found in project {project!r}", field="model")


def model_named(body: bytes) -> str:
    """The ``model`` field of an OpenAI request body."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ConfigError(f"the request is over {MAX_REQUEST_BYTES} bytes", field="body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"the body is not JSON: {e}", field="body") from e
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        raise ConfigError("the body names no model (OpenAI's 'model' field)", field="model")
    return model


def _model_services(store: Store, project: str) -> list[Run]:
    return [
        run
        for run in store.active_runs(project)
        if run.configuration_type == "service"
        and run.configuration.get("model")
        and run.status == RunStatus.RUNNING
    ]


def _check_member(store: Store, project: str, authorization: str | None) -> None:
    # As dstack's model proxy: a project member's token, whatever each service's `auth`.
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("the model API needs a project token: 'Authorization: Bearer …'")
    user = user_for_token(store, token.strip())
    found = store.get_project(project)
    if found is None or not may_see(user, found):
        raise NotFoundError(f"project {project!r} not found", field="project")
