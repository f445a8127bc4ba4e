"""The FastAPI application: wiring only; the work is in ``api.services``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.dashboard import routes as dashboard_routes
from api.docs import install_docs
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.limits import BodySizeLimit
from api.routes import (
    code,
    fleets,
    health,
    models,
    nodes,
    offers,
    proxy,
    runs,
    schedules,
    secrets,
    ssh,
    users,
    volumes,
)
from api.routes import metrics as metrics_routes
from api.routes.metrics import store_registry
from api.services.auth import bootstrap
from api.services.tunnels import TunnelPool
from shared import ssh as ssh_keys
from shared import startup_heap
from shared.clusters import ClusterRegistry
from shared.configuration.server import load_server_config
from shared.metrics import StoreCollector
from shared.settings import Settings
from shared.state.store import Store
from shared.tasks import create_celery


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.store = store or Store.from_settings(settings.redis)
        app.state.celery = create_celery(settings)
        server = load_server_config(settings.server_config_path)
        app.state.clusters = ClusterRegistry(
            server,
            request_timeout_s=settings.kube.request_timeout_s,
            exec_timeout_s=settings.kube.exec_timeout_s,
            namespace_read_ttl_s=settings.kube.namespace_read_ttl_s,
        )
        # Off the request path, and off start-up's: a credential plugin may take seconds.
        threading.Thread(
            target=_connect_all, args=(app.state.clusters,), name="connect-clusters", daemon=True
        ).start()
        admin = settings.api.admin_token
        token = bootstrap(
            app.state.store,
            admin_token=admin.get_secret_value() if admin else None,
            projects=server.project_names(),
        )
        app.state.metrics_registry = store_registry(StoreCollector(app.state.store))
        if token is not None and admin is None:
            # Generated on first start: printed once, as dstack does, never shown again.
            # A token given through settings is the operator's and is not echoed.
            print(f"The admin token is {token}", flush=True)  # noqa: T201
        # Berth's SSH key exists (and its public half is published for run pods)
        # from the first start, whichever process comes up first.
        ssh_keys.berth_key(app.state.store, settings.ssh.key_file)
        app.state.tunnels = TunnelPool(app.state.store, settings.ssh)
        build_routes(app)
        startup_heap.freeze("the API's start")  # in ``berth server`` only
        yield
        await app.state.tunnels.close()
        app.state.clusters.close()
        app.state.store.close()

    app = FastAPI(title="Berth", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.api.max_body_bytes,
        by_suffix=((code.PATH_SUFFIX, settings.code.max_bytes),),
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(runs.router, responses=ERROR_RESPONSES)
    app.include_router(fleets.router, responses=ERROR_RESPONSES)
    app.include_router(volumes.router, responses=ERROR_RESPONSES)
    app.include_router(offers.router, responses=ERROR_RESPONSES)
    app.include_router(nodes.router, responses=ERROR_RESPONSES)
    app.include_router(code.router, responses=ERROR_RESPONSES)
    app.include_router(secrets.router, responses=ERROR_RESPONSES)
    app.include_router(schedules.router, responses=ERROR_RESPONSES)
    app.include_router(users.router, responses=ERROR_RESPONSES)
    app.include_router(ssh.router, responses=ERROR_RESPONSES)
    app.include_router(proxy.router)
    app.include_router(models.router)
    app.include_router(dashboard_routes.router)
    return app


def _connect_all(clusters: ClusterRegistry) -> None:
    clusters.connect_all()
    # The Kubernetes client, loaded by connecting, is kept for good too.
    startup_heap.freeze("connecting the API's clusters")


def build_routes(app: FastAPI) -> None:
    """Build FastAPI's state for every route (its dependencies' signatures, its body
    fields) now, before the first request.

    FastAPI (0.16x) builds a router's on its first match: 0.4 s of CPU in the first
    submission after a start (its 202 took 0.54 s, the next 0.05 s), in the middle of
    the burst that brought it. It is reached through FastAPI's own route objects; a
    FastAPI that names them otherwise only brings the cost back to the first request."""
    pending: list[object] = list(app.router.routes)
    while pending:
        route = pending.pop()
        for name in ("effective_candidates", "effective_low_priority_routes"):
            build = getattr(route, name, None)
            if callable(build):
                pending.extend(build())
