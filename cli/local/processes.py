"""Start detached processes, remember them by PID, and stop exactly those.

A PID alone can be reused by the OS after a crash, so a recorded process is
only "ours" while ``/proc/<pid>/exe`` is still the binary we ran (not cmdline:
redis-server rewrites its own process title).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from pydantic import BaseModel

from shared.errors import LocalClusterError

_STOP_GRACE_S = 10.0  # etcd and the apiserver flush within a second or two on SIGTERM


class ProcessRecord(BaseModel):
    name: str
    pid: int
    argv: list[str]
    log: str


def start_process(name: str, argv: list[str], *, log_dir: Path) -> ProcessRecord:
    """Start ``argv`` in its own session, logging to ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # posix_spawn, not Popen: these processes outlive the caller by design, and
        # a dropped Popen object warns; setsid keeps the caller's Ctrl-C away from them.
        pid = os.posix_spawnp(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as e:
        raise LocalClusterError(f"cannot start {name} ({argv[0]}): {e}") from e
    finally:
        os.close(log_fd)
    return ProcessRecord(name=name, pid=pid, argv=argv, log=str(log_path))


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded PID is alive and still runs the recorded binary."""
    try:
        exe = os.readlink(f"/proc/{record.pid}/exe")
        stat = Path(f"/proc/{record.pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has exited; its parent just has not reaped it yet.
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    # A rebuilt binary shows as "<path> (deleted)"; it is still the process we started.
    return exe.removesuffix(" (deleted)") == os.path.realpath(record.argv[0])


def stop_process(record: ProcessRecord, *, grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM the recorded process, then SIGKILL it after ``grace_s``."""
    if not is_running(record):
        return
    _signal(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_running(record):
            _reap(record.pid)
            return
        time.sleep(0.05)
    _signal(record.pid, signal.SIGKILL)
    _reap(record.pid)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(record: ProcessRecord, lines: int = 20) -> str:
    try:
        text = Path(record.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for others this is a harmless ECHILD.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
