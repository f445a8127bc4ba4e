"""What a worker process needs, built once per process on first use.

Celery's entry point must find a module-level app and tasks are plain
functions of ids, so the store, the server config and the Kubernetes clients
hang off one lazily-built :class:`WorkerContext` rather than module globals
scattered through the code.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

from celery import Celery

from shared import startup_heap
from shared.clusters import ClusterRegistry
from shared.configuration.server import ServerConfig, load_server_config
from shared.policy import access
from shared.settings import Settings, load_settings
from shared.state.store import Store
from shared.tasks import create_celery


@dataclass
class WorkerContext:
    settings: Settings
    store: Store
    server: ServerConfig
    clusters: ClusterRegistry
    celery: Celery

    def access_in(self, project: str, cluster: str | None = None) -> access.Access:
        """What Berth may do in ``project``'s cluster ``cluster``, asked again when due."""
        return access.access_for(
            self.store,
            self.clusters,
            project,
            recheck_s=self.settings.kube.access_recheck_s,
            cluster=cluster,
        )

    def close(self) -> None:
        self.clusters.close()
        self.store.close()


_building = threading.RLock()


def context() -> WorkerContext:
    """The process-wide context; built on first use, after Celery forks its pool."""
    with _building:  # once: the warm-up and the first tasks may ask at the same moment
        return _context()


@cache
def _context() -> WorkerContext:
    return build_context(load_settings())


def warm_up() -> threading.Thread:
    """Build the context and connect every cluster now, in a thread of its own.

    The first use of a cluster loads the Kubernetes client's modules: ~1.5 s of CPU
    on 2 cores, which the first scheduling pass after a start used to pay while holding
    the scheduling lock (the first run of a fresh worker: pod created 1.1-2.4 s after
    its submission, the next 0.05-0.15 s). Connecting is ``connect_all``'s, as the API
    does at start; a task that comes meanwhile waits on the same import, no longer.
    In a ``berth worker`` process what that built is then kept out of later garbage
    collections (shared/startup_heap.py)."""

    def connect() -> None:
        context().clusters.connect_all()
        startup_heap.freeze("the worker's warm-up")

    thread = threading.Thread(target=connect, name="connect-clusters", daemon=True)
    thread.start()
    return thread


def build_context(settings: Settings) -> WorkerContext:
    server = load_server_config(settings.server_config_path)
    return WorkerContext(
        settings=settings,
        store=Store.from_settings(settings.redis),
        server=server,
        clusters=ClusterRegistry(
            server,
            request_timeout_s=settings.kube.request_timeout_s,
            exec_timeout_s=settings.kube.exec_timeout_s,
            connections=settings.kube.worker_connections,
        ),
        celery=create_celery(settings),
    )
