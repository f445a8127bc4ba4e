"""``berth server | worker | proxy-worker | beat | flower``: Berth's own processes."""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import typer

from shared.errors import ConfigError
from shared.settings import Settings, load_settings

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
    _long_lived(settings, metrics=False)  # the API serves /metrics on its own port
    host, port = host or settings.api.host, port or settings.api.port
    if not settings.api.reuse_port:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=10,
        )
        return
    # uvicorn has no SO_REUSEPORT option: bind the socket here and hand it over.
    config = uvicorn.Config(create_app(settings), log_level="info", timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[reuse_port_socket(host, port, backlog=config.backlog)])


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = QUEUES,
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 8,
    name: Annotated[str, typer.Option(help="Celery node name.")] = "worker@%h",
) -> None:
    """Run a Celery worker for the scheduling, provisioning and teardown queues."""
    from workers.celery_app import app

    _long_lived(load_settings())
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

    settings = load_settings()
    _long_lived(settings)
    run_proxy_worker(settings)


def log_collector() -> None:
    """Run the log collector: every job's output copied into Berth's log store."""
    from workers.collector.process import run_log_collector

    settings = load_settings()
    _long_lived(settings)
    run_log_collector(settings)


def flower(
    address: Annotated[
        str,
        typer.Option(help="Bind address; any but loopback needs BERTH_FLOWER__BASIC_AUTH."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Flower's port.")] = 5555,
) -> None:
    """Run Flower to watch the workers (basic auth from BERTH_FLOWER__BASIC_AUTH)."""
    from workers.celery_app import app

    auth = load_settings().flower.basic_auth
    if auth is None and not _is_loopback(address):
        # Flower can revoke tasks and shut workers down: never open without a password.
        raise ConfigError(
            f"Flower would listen on {address} without a password;"
            " set BERTH_FLOWER__BASIC_AUTH=user:password",
            field="flower.basic_auth",
        )
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if auth is not None:
        # Passed to Flower in-process, so the password is not on the command line.
        argv.append(f"--basic-auth={auth.get_secret_value()}")
    app.start(argv)


def reuse_port_socket(host: str, port: int, *, backlog: int) -> socket.socket:
    """A listening socket that other processes may bind to the same address too
    (``api.reuse_port``); the kernel spreads new connections over all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} with SO_REUSEPORT: {e}; a process on that port"
            " without BERTH_API__REUSE_PORT=true keeps others out",
            field="api.port",
        ) from e
    return sock


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable


def _long_lived(settings: Settings, *, metrics: bool = True) -> None:
    """What every long-lived ``berth`` process sets up first: its logs, its metrics, and
    its start-up objects frozen once built (shared/startup_heap.py)."""
    from shared import logs, startup_heap
    from shared.metrics import serve

    startup_heap.enable()
    obs = settings.observability
    logs.configure(json_lines=obs.log_json, level=obs.log_level)
    if metrics:
        serve(obs.metrics_port)
