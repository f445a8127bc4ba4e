"""Opening a dev environment: what ``berth apply`` does once the run is up, as dstack does.

A dev environment exists to be opened in an editor, so ``apply`` does not stop at
``running``: it waits until the container's sshd answers through the jump host
*and* the ``init`` commands have finished (the pod creates
:data:`~shared.ssh.INIT_DONE_FILE` then), streaming their output meanwhile;
writes the SSH config with host keys pinned (:mod:`cli.attach`); prints the IDE
link and the ``ssh RUN`` line; and stays, forwarding the run's ports, until
Ctrl-C, which detaches and leaves the run running.

Readiness is checked with the user's own ``ssh`` and the config just written, so
a printed link is one that works from this machine, not merely a Running pod.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli.attach import Session, open_session, print_how_to_open, stay_attached
from cli.client import BerthClient
from cli.console import err, out
from shared.errors import BerthError, ConfigError
from shared.ssh import INIT_DONE_FILE

_POLL_S = 1.0  # between readiness checks; each is one ssh round trip through the jump host
_SSH_TIMEOUT_S = 20  # one readiness check, connection included
FINISHED = frozenset({"done", "failed", "terminated"})


def open_dev_environment(
    client: BerthClient, name: str, *, home: Path, yes: bool, ready_timeout_s: float
) -> dict[str, Any]:
    """Wait until ``name`` can be opened, print how, stay attached; the run as last seen."""
    session = open_session(client, name, home=home, identity=None, yes=yes)
    run = _wait_ready(client, session, timeout_s=ready_timeout_s)
    if run["status"] in FINISHED:
        return run
    print_how_to_open(session)
    stay_attached(client, session)
    return client.run(name)


def _wait_ready(client: BerthClient, session: Session, *, timeout_s: float) -> dict[str, Any]:
    """Stream the run's output until sshd answers and init has finished (or the run ends)."""
    ssh_bin = shutil.which("ssh")
    if ssh_bin is None:
        raise ConfigError("no 'ssh' on PATH: install the OpenSSH client", field="ssh")
    host = session.access.nodes[0].names[0]
    probe = [
        ssh_bin,
        "-F",
        str(session.config),
        "-o",
        "BatchMode=yes",  # never a password or passphrase prompt in the middle of the output
        "-o",
        "ConnectTimeout=10",
        host,
        f"test -e {INIT_DONE_FILE}",
    ]
    deadline = time.monotonic() + timeout_s
    printed = 0
    last_error = ""
    while True:
        printed = _print_new_output(client, session.access.run, printed)
        try:
            result = subprocess.run(
                probe, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=_SSH_TIMEOUT_S, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                _print_new_output(client, session.access.run, printed)
                return session.run
            last_error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        except subprocess.TimeoutExpired:
            last_error = f"ssh did not answer in {_SSH_TIMEOUT_S}s"
        run = client.run(session.access.run)
        if run["status"] in FINISHED:
            reason = f" ({run['reason']})" if run.get("reason") else ""
            out.print(f"{session.access.run}: {run['status']}{reason}")
            return run
        if time.monotonic() > deadline:
            raise BerthError(
                f"{session.access.run} is running but not reachable over SSH after"
                f" {timeout_s:.0f}s (last: {last_error or 'init still running'});"
                f" see berth logs {session.access.run}, then berth attach {session.access.run}"
            )
        time.sleep(_POLL_S)


def _print_new_output(client: BerthClient, name: str, printed: int) -> int:
    """The init commands' output past the first ``printed`` bytes; the new total."""
    seen = 0
    try:
        for chunk in client.logs(name):
            start = max(0, printed - seen)
            seen += len(chunk)
            if start < len(chunk):
                sys.stdout.buffer.write(chunk[start:])
                sys.stdout.flush()
    except BerthError as e:
        err.print(f"[dim]output not available yet: {e}[/dim]")
    return max(printed, seen)
