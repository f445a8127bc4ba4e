"""The ``berth`` console script: one entry point for users, operators and tests."""

from __future__ import annotations

import typer

from cli import (
    attach,
    local_commands,
    offer_commands,
    run_commands,
    schedule_commands,
    secret_commands,
    server_commands,
    volume_commands,
)
from cli.console import err
from shared.errors import BerthError

app = typer.Typer(no_args_is_help=True, help="Berth: run GPU work on your Kubernetes cluster.")
app.add_typer(local_commands.app, name="local")
app.add_typer(run_commands.fleet_app, name="fleet")
app.add_typer(volume_commands.volume_app, name="volume")
app.add_typer(secret_commands.secret_app, name="secret")
app.add_typer(schedule_commands.schedule_app, name="schedule")
for command in (
    run_commands.config,
    run_commands.apply,
    run_commands.ps,
    run_commands.logs,
    run_commands.stop,
    run_commands.delete,
    offer_commands.offer,
    offer_commands.nodes,
    run_commands.status,
    attach.attach,
    server_commands.server,
    server_commands.worker,
    server_commands.beat,
    server_commands.proxy_worker,
    server_commands.log_collector,
    server_commands.flower,
):
    app.command()(command)


def run() -> None:
    """Entry point: Berth's own errors become one red line and exit code 1, not a traceback."""
    try:
        app()
    except BerthError as e:
        err.print(f"[red]error:[/red] {e}")
        raise SystemExit(1) from e
