"""The FastAPI application: wiring only; the work is in ``api.services``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import fleets, health, offers, runs, users
from api.services.auth import bootstrap
from shared.clusters import ClusterRegistry
from shared.configuration.server import load_server_config
from shared.settings import Settings
from shared.store import Store
from shared.tasks import create_celery


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.store = store or Store.connect(
            settings.redis.url,
            prefix=settings.redis.key_prefix,
            timeout_s=settings.redis.socket_timeout_s,
        )
        app.state.celery = create_celery(settings)
        server = load_server_config(settings.server_config_path)
        app.state.clusters = ClusterRegistry(
            server, request_timeout_s=settings.kube.request_timeout_s
        )
        admin = settings.api.admin_token
        token = bootstrap(
            app.state.store,
            admin_token=admin.get_secret_value() if admin else None,
            projects=server.project_names(),
        )
        if token is not None:
            # Printed once, like dstack's first start; it is never shown again.
            print(f"The admin token is {token}", flush=True)  # noqa: T201
        yield
        app.state.clusters.close()
        app.state.store.close()

    app = FastAPI(title="Berth", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(runs.router)
    app.include_router(fleets.router)
    app.include_router(offers.router)
    app.include_router(users.router)
    return app
