"""``berth schedule list | delete``: configurations beat starts at cron times (``schedule``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.client import BerthClient, load_client_config
from cli.console import out
from shared.settings import load_settings

schedule_app = typer.Typer(help="Schedules: runs Berth starts at their cron times (UTC).")


def _client() -> BerthClient:
    return BerthClient(load_client_config(load_settings().home))


@schedule_app.command("list")
def schedule_list() -> None:
    """The project's schedules and when each starts its next run."""
    client = _client()
    try:
        print_schedules(client.schedules(), empty="no schedules")
    finally:
        client.close()


@schedule_app.command("delete")
def schedule_delete(name: Annotated[str, typer.Argument(help="The schedule's run name.")]) -> None:
    """Start no more runs of this schedule; a run it started goes on (berth stop it)."""
    client = _client()
    try:
        client.delete_schedule(name)
    finally:
        client.close()
    out.print(f"schedule {name} deleted")


def schedule_line(schedule: dict[str, Any]) -> str:
    """``next start 2026-05-01 08:00 UTC (in 3h12m); cron 0 8 * * mon-fri``."""
    at = float(schedule["next_start_at"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
    crons = ", ".join(schedule["crons"])
    return f"next start {when} (in {_until(at - time.time())}); cron {crons}"


def print_schedules(schedules: list[dict[str, Any]], *, empty: str | None = None) -> None:
    if not schedules:
        if empty:
            out.print(empty)
        return
    table = Table(title="scheduled")
    for header in ("NAME", "TYPE", "NEXT START", "CRON"):
        table.add_column(header, no_wrap=header == "NAME")
    for s in schedules:
        at = float(s["next_start_at"])
        next_start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
        table.add_row(
            s["name"],
            s["type"],
            f"{next_start} (in {_until(at - time.time())})",
            ", ".join(s["crons"]),
        )
    out.print(table)


def _until(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes >= 24 * 60:
        return f"{minutes // 1440}d{minutes % 1440 // 60}h"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{max(0, int(seconds))}s"
