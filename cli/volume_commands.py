"""``berth volume apply | list | delete``: the project's PersistentVolumeClaims, by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.client import BerthClient, load_client_config
from cli.console import ago, out
from shared.errors import ConfigError
from shared.settings import load_settings

volume_app = typer.Typer(help="Volumes: PersistentVolumeClaims that runs mount by name.")


def _client() -> BerthClient:
    return BerthClient(load_client_config(load_settings().home))


@volume_app.command("apply")
def volume_apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="Volume configuration (type: volume).")
    ],
) -> None:
    """Create a volume: register a claim (claim_name) or let Berth create one (size)."""
    try:
        text = file.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e}", field="file") from e
    client = _client()
    try:
        volume = client.apply_volume(text)
    finally:
        client.close()
    out.print(f"volume {volume['name']}: claim {volume['claim']} ({volume['status']})")


@volume_app.command("list")
def volume_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List volumes, their claims, status and the runs that use them."""
    client = _client()
    try:
        volumes = client.volumes()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(volumes, indent=2) + "\n")
        return
    table = Table("NAME", "CLAIM", "SPEC", "STATUS", "CAPACITY", "USED BY", "CREATED")
    for v in volumes:
        table.add_row(
            v["name"],
            v["claim"],
            v["spec"] + (" read-only" if v["read_only"] else ""),
            v["status"],
            v["capacity"] or "-",
            ", ".join(v["used_by"]) or "-",
            ago(v["created_at"]),
        )
    out.print(table)


@volume_app.command("delete")
def volume_delete(name: Annotated[str, typer.Argument(help="Volume name.")]) -> None:
    """Delete a volume no active run uses (and the claim, if Berth created it)."""
    client = _client()
    try:
        client.delete_volume(name)
    finally:
        client.close()
    out.print(f"deleted volume {name}")
