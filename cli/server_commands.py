"""``berth server | worker | proxy-worker | beat | flower``: Berth's own processes."""

from __future__ import annotations

from typing import Annotated

import typer

from shared.settings import load_settings

QUEUES = "scheduling,provisioning,teardown"


def server(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default from settings: loopback).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the submission API."""
    import uvicorn

    from api.app import create_app

    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = QUEUES,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
    name: Annotated[str, typer.Option(help="Celery node name.")] = "worker@%h",
) -> None:
    """Run a Celery worker for the scheduling, provisioning and teardown queues."""
    from workers.celery_app import app

    # Threads, not prefork: tasks wait on the network, and threads share one
    # Kubernetes connection pool per process.
    app.worker_main(
        [
            "worker",
            "-Q",
            queues,
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "-n",
            name,
            "-E",
            "--loglevel=INFO",
        ]
    )


def beat() -> None:
    """Run Celery beat: the periodic sweeps (one instance per installation)."""
    from workers.celery_app import app

    app.start(
        ["beat", "--loglevel=INFO", "--schedule", str(load_settings().home / "celerybeat-schedule")]
    )


def proxy_worker() -> None:
    """Run the dedicated proxy worker: GPU inventory watch and the SSH jump host."""
    from workers.proxy import run_proxy_worker

    run_proxy_worker(load_settings())


def flower(
    port: Annotated[int, typer.Option(help="Flower's port (loopback).")] = 5555,
) -> None:
    """Run Flower to watch the workers (basic auth from BERTH_FLOWER__BASIC_AUTH)."""
    from workers.celery_app import app

    argv = ["flower", "--address=127.0.0.1", f"--port={port}"]
    auth = load_settings().flower.basic_auth
    if auth is not None:
        argv.append(f"--basic-auth={auth.get_secret_value()}")
    app.start(argv)
