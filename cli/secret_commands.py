"""``berth secret set | list | delete``: the project's secrets, as ``${{ secrets.NAME }}``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from cli.client import BerthClient, load_client_config
from cli.console import ago, out
from shared.errors import ConfigError
from shared.settings import load_settings

secret_app = typer.Typer(
    help="Secrets: values runs name as ${{ secrets.NAME }} in env and registry_auth."
)


def _client() -> BerthClient:
    return BerthClient(load_client_config(load_settings().home))


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="Secret name (letters, digits, _ and -).")],
    value: Annotated[
        str | None,
        typer.Argument(help="The value; read from stdin, or asked for, when absent."),
    ] = None,
) -> None:
    """Create or replace a secret (project admins). Prefer stdin: an argument lands in
    the shell's history."""
    if value is None:
        value = _read_value(name)
    client = _client()
    try:
        client.set_secret(name, value)
    finally:
        client.close()
    out.print(f"secret {name} set")


@secret_app.command("list")
def secret_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the project's secrets: names and when they changed, never values."""
    client = _client()
    try:
        found = client.secrets()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    table = Table("NAME", "UPDATED")
    for item in found:
        table.add_row(item["name"], ago(item["updated_at"]))
    out.print(table)


@secret_app.command("delete")
def secret_delete(name: Annotated[str, typer.Argument(help="Secret name.")]) -> None:
    """Delete a secret (project admins); runs that name it are refused from then on."""
    client = _client()
    try:
        client.delete_secret(name)
    finally:
        client.close()
    out.print(f"secret {name} deleted")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return str(typer.prompt(f"value of {name}", hide_input=True))
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]  # `echo` adds one; a secret rarely ends with a newline
    if not value:
        raise ConfigError("no value on stdin", field="value")
    return value
