"""Reading a run's end through the CLI, as a user would (``berth ps -a --json``)."""

from __future__ import annotations

import json
from typing import Any

from tests.polling import wait_until
from tests.stack import Stack

FINISHED = ("done", "failed", "terminated")


def ended(stack: Stack, name: str, *, timeout: float = 90) -> dict[str, Any]:
    """The run ``name`` once it has finished, whichever way."""

    def check() -> dict[str, Any] | None:
        runs = json.loads(stack.cli("ps", "-a", "--json").stdout)
        run: dict[str, Any] = next(r for r in runs if r["name"] == name)
        return run if run["status"] in FINISHED else None

    return wait_until(check, timeout=timeout, what=f"{name} finished")
