"""The ``berth`` console script."""

from __future__ import annotations

import typer

from cli import local_commands
from cli.console import err
from shared.errors import BerthError

app = typer.Typer(no_args_is_help=True, help="Berth: run GPU work on your Kubernetes cluster.")
app.add_typer(local_commands.app, name="local")


def run() -> None:
    """Entry point: Berth's own errors become one red line and exit code 1, not a traceback."""
    try:
        app()
    except BerthError as e:
        err.print(f"[red]error:[/red] {e}")
        raise SystemExit(1) from e
