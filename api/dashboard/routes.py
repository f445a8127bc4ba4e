"""The dashboard's routes: login, the pages, their JSON, the live stream and static files.

Thin, as every route: the pages come from :mod:`.pages`, the data from
:mod:`.state` and the API's own services. A missing, wrong or expired session
gets the login page (HTML routes) or a 401 (data routes), never a trace.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from api.dashboard import pages, sessions
from api.dashboard.state import dashboard_state
from api.deps import ClustersDep, LogStoreDep, SettingsDep, StoreDep
from api.services import events as event_service
from api.services import logs as log_service
from api.services.auth import may_see
from shared.errors import NotFoundError
from shared.state.records import Run, User
from shared.state.store import Store

router = APIRouter(prefix="/dashboard", include_in_schema=False)

STATIC = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript", ".css": "text/css"}
# Only Berth's own files, no inline script: a log line or run name can never run.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_KEEPALIVE_S = 15.0  # an idle stream still writes this often, so a gone browser is noticed
_STREAM_MAX_S = 3600.0  # then the browser's EventSource reconnects (and re-checks its session)


def _viewer(request: Request, store: StoreDep) -> User | None:
    return sessions.session_user(store, request.cookies.get(sessions.COOKIE))


Viewer = Annotated[User | None, Depends(_viewer)]


@router.get("", response_class=HTMLResponse)
def home(viewer: Viewer) -> HTMLResponse:
    if viewer is None:
        return _html(pages.login_page())
    return _html(pages.app_page(viewer.name))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    form = urllib.parse.parse_qs((await request.body())[:4096].decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    user = store.user_by_token(token) if token else None
    if user is None:
        return _html(pages.login_page("That token is not known to Berth."), status=401)
    ttl = settings.api.session_ttl_s
    sid = sessions.create_session(store, user, ttl_s=ttl)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        sid,
        max_age=ttl,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return response


@router.post("/logout")
def logout(request: Request, store: StoreDep) -> Response:
    sessions.end_session(store, request.cookies.get(sessions.COOKIE))
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/dashboard")
    return response


@router.get("/state")
def state(viewer: Viewer, store: StoreDep, clusters: ClustersDep) -> Response:
    if viewer is None:
        return _unauthorized()
    return JSONResponse(dashboard_state(store, clusters, viewer))


@router.get("/stream")
def stream(
    viewer: Viewer, store: StoreDep, clusters: ClustersDep, settings: SettingsDep
) -> Response:
    """Server-sent events: the state whenever it changes, checked every refresh."""
    if viewer is None:
        return _unauthorized()
    body = _state_events(store, clusters, viewer, every_s=settings.api.dashboard_refresh_s)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/runs/{project}/{name}", response_class=HTMLResponse)
def run_page(project: str, name: str, viewer: Viewer, store: StoreDep) -> HTMLResponse:
    if viewer is None:
        return _html(pages.login_page())
    run = _visible_run(store, viewer, project, name)
    if run is None:
        # Said the same way for a hidden project and a missing run, echoing nothing.
        return _html(pages.not_found_page("No such run in your projects."), status=404)
    jobs = sorted(store.jobs_of(run), key=lambda j: (j.replica_num, j.job_num))
    kind = run.configuration_type
    ssh = f"berth attach {run.name}, then: ssh {run.name}" if kind != "service" else None
    service = f"/proxy/services/{run.project}/{run.name}/" if kind == "service" else None
    labels = [f"{j.replica_num}/{j.job_num}" for j in jobs] or ["0/0"]
    return _html(pages.run_page(run, ssh_command=ssh, service_url=service, jobs=labels))


@router.get("/runs/{project}/{name}/events")
def run_events(
    project: str, name: str, viewer: Viewer, store: StoreDep, clusters: ClustersDep
) -> Response:
    run = _visible_run(store, viewer, project, name) if viewer else None
    if run is None:
        return _unauthorized() if viewer is None else JSONResponse([], status_code=404)
    found = event_service.run_events(store, clusters, run, after="-", kubernetes=True)
    return JSONResponse([e.model_dump(mode="json") for e in found])


@router.get("/runs/{project}/{name}/logs")
def run_logs(
    project: str,
    name: str,
    viewer: Viewer,
    store: StoreDep,
    logs: LogStoreDep,
    replica: int = 0,
    job: int = 0,
) -> Response:
    run = _visible_run(store, viewer, project, name) if viewer else None
    if run is None:
        return _unauthorized() if viewer is None else Response(status_code=404)
    request = log_service.LogRequest(job_num=job, replica_num=replica, follow=True)
    answer = log_service.job_logs(store, logs, run, request)
    return StreamingResponse(answer.body, media_type="text/plain; charset=utf-8")


@router.get("/static/{filename}")
def static(filename: str) -> Response:
    path = STATIC / filename
    if path.suffix not in _TYPES or path.parent != STATIC or not path.is_file():
        return Response(status_code=404)
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix], headers=_security())


def _state_events(store: Store, clusters: Any, viewer: User, *, every_s: float) -> Iterator[bytes]:
    started = last_write = time.monotonic()
    digest = ""
    while time.monotonic() - started < _STREAM_MAX_S:
        state = dashboard_state(store, clusters, viewer)
        # Only the stamp changes every look: compare without it, send (with it) on change.
        unstamped = json.dumps({**state, "at": 0}, sort_keys=True).encode()
        now_digest = hashlib.sha256(unstamped).hexdigest()
        if now_digest != digest:
            digest, last_write = now_digest, time.monotonic()
            yield f"event: state\ndata: {json.dumps(state, sort_keys=True)}\n\n".encode()
        elif time.monotonic() - last_write >= _KEEPALIVE_S:
            last_write = time.monotonic()
            yield b": keepalive\n\n"
        time.sleep(every_s)


def _visible_run(store: Store, viewer: User | None, project: str, name: str) -> Run | None:
    if viewer is None:
        return None
    found = store.get_project(project)
    if found is None or not may_see(viewer, found):
        return None
    try:
        return store.run_by_name(project, name)
    except NotFoundError:
        return None


def _html(text: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=_security())


def _security() -> dict[str, str]:
    return {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _unauthorized() -> Response:
    return JSONResponse(
        {"detail": "not logged in: open /dashboard and log in with your token"}, status_code=401
    )


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
