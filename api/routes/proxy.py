"""``/proxy/services/{project}/{run}/{path}``: HTTP to a service's replicas, through tunnels.

Each request reads the run and its jobs afresh (two Redis round trips), so a
replica whose job leaves ``running`` gets no further request, and its pooled
connections are closed, from that moment. Replicas take turns (round-robin);
one that refuses the connection is skipped for the next. Responses stream
through as the replica sends them.

With ``auth: true`` (dstack's default) the caller needs the bearer token of a
project member; that token is not passed on to the service.

Only *ready* replicas get requests (a service's ``probes``); with a replica group
that has a ``router``, only that group's replica: the router sends them on to
the other groups' replicas (``workers/service_routers.py``). Before forwarding,
the service's ``rate_limits`` may answer 429 and, with ``scaling``, the request
is counted (``api/services/service_requests.py``); ``strip_prefix: false``
sends the whole public path on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import httpcore
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.errors import error_response
from api.services import service_requests
from api.services.auth import may_see, user_for_token
from api.services.tunnels import Replica, TunnelPool
from shared import ssh
from shared.clusters import job_cluster
from shared.configuration.fields import RateLimit
from shared.configuration.groups import stored_router
from shared.errors import AuthError, NotFoundError, TemporaryError
from shared.services import service_traffic
from shared.ssh import JumpHostRecord
from shared.state.records import Run, RunStatus, User
from shared.state.store import Store

router = APIRouter(tags=["proxy"])

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110 section 7.6.1: meaningful for one hop only, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


async def _tunnels(request: Request) -> TunnelPool:
    tunnels: TunnelPool = request.app.state.tunnels
    return tunnels


TunnelsDep = Annotated[TunnelPool, Depends(_tunnels)]


@router.api_route("/proxy/services/{project}/{run}/{path:path}", methods=_METHODS)
async def proxy_service(
    project: str, run: str, path: str, request: Request, tunnels: TunnelsDep
) -> Response:
    """Forward the request to one of the service's running replicas."""
    target = await run_in_threadpool(
        resolve_service,
        tunnels.store,
        project=project,
        run=run,
        authorization=request.headers.get("authorization"),
    )
    return await serve(request, tunnels, target, path=path)


async def serve(
    request: Request, tunnels: TunnelPool, target: ServiceTarget, *, path: str
) -> Response:
    """The service's rate limits and request count, then ``path`` forwarded to a replica."""
    await tunnels.retire(target.run_id, target.running)
    if target.rate_limits or target.counted:
        refusal = await run_in_threadpool(
            service_requests.admit,
            tunnels.store,
            run_id=target.run_id,
            limits=target.rate_limits,
            counted=target.counted,
            path=f"/{path}",
            client_ip=request.client.host if request.client else "",
            headers=request.headers,
        )
        if refusal is not None:
            answer = error_response(
                429, "rate_limited", f"over the service's rate limit for {refusal.prefix}"
            )
            answer.headers["Retry-After"] = str(refusal.retry_after_s)
            return answer
    # dstack's strip_prefix: false sends the service the path the client asked for.
    sent = path if target.strip_prefix else f"{target.prefix.lstrip('/')}/{path}"
    return await forward(request, tunnels, target, path=sent)


@dataclass(frozen=True)
class ServiceTarget:
    run_id: str
    prefix: str
    """The public path prefix, sent on as ``X-Forwarded-Prefix``."""
    replicas: list[Replica]
    """The ready replicas: requests go to these."""
    jump: JumpHostRecord
    auth: bool
    strip_prefix: bool = True
    rate_limits: tuple[RateLimit, ...] = ()
    counted: bool = False
    """Requests are counted for ``scaling`` (``shared.services.service_traffic``)."""
    running: list[Replica] = field(default_factory=list)
    """Every running replica, ready or not: a replica whose probe fails for a moment
    gets no new request, but its open streams are not cut."""


def resolve_service(
    store: Store, *, project: str, run: str, authorization: str | None
) -> ServiceTarget:
    """The service's running replicas and its jump host, after the auth check.

    Only a service with ``auth: false`` is public. For anything else (an auth
    service, another kind of run, a run or project that does not exist) the
    token is checked first, so an anonymous caller learns nothing about which
    projects and runs exist: it gets 401 for all of them.
    """
    found = store.get_project(project)
    record = _find_run(store, project, run) if found is not None else None
    is_service = record is not None and record.configuration_type == "service"
    public = is_service and record is not None and not record.configuration.get("auth", True)
    if not public:
        user = _caller(store, authorization, run)
        if found is None or not may_see(user, found):
            raise NotFoundError(f"project {project!r} not found", field="project")
    if record is None:
        raise NotFoundError(f"no run named {run!r} in project {project!r}", field="name")
    if not is_service:
        raise NotFoundError(f"run {run!r} is a {record.configuration_type}, not a service")
    port = int(record.configuration["port"])
    running = [j for j in store.jobs_of(record) if j.status == RunStatus.RUNNING and j.pod_ip]
    router = stored_router(record.configuration)
    if router is not None:  # the router replica takes every request; it sends them on
        running = [j for j in running if j.group == router[0]]
    live = {j.id: Replica(job_id=j.id, pod_ip=j.pod_ip, port=port) for j in running if j.pod_ip}
    # A replica whose probe fails (or has not passed yet) gets no request: dstack's probes.
    replicas = [live[j.id] for j in running if j.id in live and j.ready is not False]
    if not replicas:
        if record.configuration.get("scaling") is not None:
            # Counted although refused: a service scaled to zero scales up on this request.
            service_traffic.count_request(store, record.id, now=time.time())
        state = f"{len(running)} running, none ready" if running else str(record.status)
        if not running and record.status == RunStatus.RUNNING:
            state = "no replica now; scaling adds one for this request"
        raise TemporaryError(f"service {run!r} has no ready replica ({state})", delay=5)
    # A run keeps to one cluster: the jump host is that cluster's.
    jump = ssh.jump_host_of(store, project, job_cluster(running[0]))
    if jump is None:
        raise TemporaryError(
            f"project {project!r} has no jump host: set proxy_jump in the server config"
        )
    return ServiceTarget(
        run_id=record.id,
        prefix=f"/proxy/services/{project}/{run}",
        replicas=replicas,
        jump=jump,
        auth=not public,
        strip_prefix=bool(record.configuration.get("strip_prefix", True)),
        rate_limits=service_requests.rate_limits_of(record.configuration),
        counted=record.configuration.get("scaling") is not None,
        running=list(live.values()),
    )


def _find_run(store: Store, project: str, name: str) -> Run | None:
    try:
        return store.run_by_name(project, name)
    except NotFoundError:
        return None


def _caller(store: Store, authorization: str | None, run: str) -> User:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError(f"service {run!r} needs a project token: 'Authorization: Bearer …'")
    return user_for_token(store, token.strip())


async def forward(
    request: Request, tunnels: TunnelPool, target: ServiceTarget, *, path: str
) -> Response:
    """Send ``request`` to the first replica that accepts a connection; stream the answer."""
    settings = tunnels.settings
    timeouts = {
        "connect": settings.proxy_connect_timeout_s,
        "pool": settings.proxy_connect_timeout_s,
        "read": settings.proxy_read_timeout_s,
        "write": settings.proxy_read_timeout_s,
    }
    query = request.url.query
    request_target = f"/{path}" + (f"?{query}" if query else "")
    body = _body(request)
    failures = []
    for replica in tunnels.in_turn(target.run_id, target.replicas):
        pool = await tunnels.http_pool(target.run_id, replica, target.jump)
        outgoing = httpcore.Request(
            request.method,
            httpcore.URL(
                scheme=b"http",
                host=replica.pod_ip.encode(),
                port=replica.port,
                target=request_target.encode(),
            ),
            headers=_request_headers(request, target, replica, has_body=body is not None),
            content=body,
            extensions={"timeout": timeouts},
        )
        try:
            response = await pool.handle_async_request(outgoing)
        except (httpcore.ConnectError, httpcore.ConnectTimeout, httpcore.PoolTimeout) as e:
            failures.append(f"{replica.pod_ip}:{replica.port}: {e}")
            continue  # the body was not read yet: the next replica can take the request
        except httpcore.TimeoutException:
            return error_response(504, "gateway_timeout", "the replica did not answer in time")
        except httpcore.NetworkError as e:
            return error_response(502, "bad_gateway", f"the replica's connection broke: {e}")
        except httpcore.ProtocolError as e:
            return error_response(502, "bad_gateway", f"the replica spoke bad HTTP: {e}")
        answer = StreamingResponse(_stream(response), status_code=response.status)
        answer.raw_headers = _response_headers(response.headers)  # repeats kept (Set-Cookie)
        return answer
    reason = "; ".join(failures)
    if not target.jump.healthy:
        reason += f" (jump host: {target.jump.status} {target.jump.reason})"
    return error_response(502, "bad_gateway", f"no replica could be reached: {reason}")


def _body(request: Request) -> AsyncIterator[bytes] | None:
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        return request.stream()
    return None


def _request_headers(
    request: Request, target: ServiceTarget, replica: Replica, *, has_body: bool
) -> list[tuple[bytes, bytes]]:
    drop = _HOP_BY_HOP | _connection_tokens(request.headers.get("connection", "")) | {"host"}
    if target.auth:
        drop |= {"authorization"}  # the member's Berth token is none of the service's business
    headers = [
        (k.encode(), v.encode()) for k, v in request.headers.items() if k.lower() not in drop
    ]
    client = request.client.host if request.client else ""
    forwarded_for = ", ".join(v for v in (request.headers.get("x-forwarded-for"), client) if v)
    headers += [
        (b"host", f"{replica.pod_ip}:{replica.port}".encode()),
        (b"x-forwarded-for", forwarded_for.encode()),
        (b"x-forwarded-host", request.headers.get("host", "").encode()),
        (b"x-forwarded-proto", request.url.scheme.encode()),
        (b"x-forwarded-prefix", target.prefix.encode()),
    ]
    if has_body and "content-length" not in request.headers:
        headers.append((b"transfer-encoding", b"chunked"))  # the client streamed it to us too
    return headers


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    connection = next((v.decode() for k, v in headers if k.lower() == b"connection"), "")
    drop = _HOP_BY_HOP | _connection_tokens(connection)
    return [(k.lower(), v) for k, v in headers if k.decode("latin-1").lower() not in drop]


def _connection_tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",") if t.strip()}


async def _stream(response: httpcore.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_stream():
            yield chunk
    except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError):
        return  # the replica went away mid-response; the client sees the stream end
    finally:
        await response.aclose()
