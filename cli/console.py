"""Shared rich consoles: tables and progress on stdout, diagnostics on stderr."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
