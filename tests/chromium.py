"""Debian's headless Chromium, for tests that look at a page as a person would."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",  # let the page's XHR fill the task table before the capture
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium(directory: Path, *args: str) -> bytes:
    """Run Chromium with ``args`` and a fresh profile under ``directory``; its stdout."""
    binary = shutil.which("chromium")
    assert binary is not None, "Debian's chromium is missing: run scripts/install.sh"
    profile = directory / f"chromium-profile-{secrets.token_hex(3)}"
    argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    # Its own session, so a hung browser and every helper process it forked go together.
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, f"chromium exited with {process.returncode}"
    return out
