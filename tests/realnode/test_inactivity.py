"""``inactivity_duration``: an open SSH session keeps a dev environment; none stops it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.realnode.world import SMALL, apply, run, running, stop, wait_status
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

LIMIT_S = 20


def _ps_row(stack: Stack, name: str) -> dict[str, Any]:
    rows = json.loads(stack.cli("ps", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def test_a_session_keeps_the_dev_environment_and_its_end_starts_the_idle_clock(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: dev-environment
        name: idle-ide
        ide: vscode
        inactivity_duration: {LIMIT_S}s
        {SMALL}
        """,
    )
    session: subprocess.Popen[bytes] | None = None
    try:
        running(real_stack, name)
        attached = real_stack.cli("attach", name, "-d", "-y")
        assert attached.returncode == 0, attached.stderr + attached.stdout
        config = real_stack.home / "ssh" / f"{name}.config"
        # A user's session, held open well past the limit.
        session = subprocess.Popen(
            ["ssh", "-F", str(config), name, "echo in; sleep 60"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert session.stdout is not None
        assert session.stdout.readline().strip() == b"in"
        opened = time.monotonic()
        # Held: still running at twice the limit, the clock reset by the open session
        # ("stays running" is checked every second; wait_until only waits for a change).
        while time.monotonic() - opened < 2 * LIMIT_S:
            current = run(real_stack, name)
            assert current["status"] == "running", current
            time.sleep(1)
        left = _ps_row(real_stack, name)["idle_stop_in_s"]
        assert left is not None and 0 < left <= LIMIT_S, left
        table = real_stack.cli("ps").stdout
        assert "idle stop" in table, table  # the cell may fold over lines in 80 columns
        session.terminate()
        session.wait(10)
        final = wait_status(real_stack, name, "terminated", "done", "failed", timeout=4 * LIMIT_S)
        assert "inactive for longer than inactivity_duration" in final["reason"], final
    finally:
        if session is not None:
            if session.poll() is None:
                session.kill()
                session.wait(10)
            if session.stdout is not None:
                session.stdout.close()
        stop(real_stack, name)
