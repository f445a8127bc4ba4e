"""Shared rich consoles: tables and progress on stdout, diagnostics on stderr."""

import time

from rich.console import Console

out = Console()
err = Console(stderr=True)


def ago(ts: float) -> str:
    """``ts`` (epoch seconds) as the largest whole unit back from now: ``3m ago``."""
    delta = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"
