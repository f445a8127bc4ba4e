"""Start detached processes, remember them by PID, and stop exactly those.

A PID alone can be reused by the OS after a crash, so a recorded process is
only "ours" while ``/proc/<pid>/stat`` still shows the start time recorded
when we spawned it (not the binary or cmdline: scripts run as their
interpreter, and redis-server rewrites its own process title).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
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
    start_ticks: int = 0
    """Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""


def start_process(
    name: str, argv: list[str], *, log_dir: Path, env: dict[str, str] | None = None
) -> ProcessRecord:
    """Start ``argv`` in its own session, logging to ``<log_dir>/<name>.log``.

    ``env`` is added to this process's environment.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # posix_spawn, not Popen: these processes outlive the caller by design, and
        # a dropped Popen object warns; setsid keeps the caller's Ctrl-C away from them.
        pid = os.posix_spawnp(
            argv[0],
            argv,
            dict(os.environ) | (env or {}),
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
    stat = _stat(pid)
    return ProcessRecord(
        name=name, pid=pid, start_ticks=stat[1] if stat else 0, argv=argv, log=str(log_path)
    )


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded PID is alive and still runs the recorded binary."""
    stat = _stat(record.pid)
    if stat is None:
        return False
    state, ticks = stat
    # A zombie (state Z) has exited; its parent just has not reaped it yet.
    return state != "Z" and ticks == record.start_ticks


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
    """A TCP port on loopback that nothing listens on right now, below the kernel's
    ephemeral range. A server's port inside that range can be taken while the server is
    down by a client's own connection to it (TCP self-connect: the kernel may give the
    connecting socket that very port as its source), and the restarted server then
    fails with "Address already in use" (seen: a Redis killed and restarted under its
    clients' reconnect attempts). Outside the range no connect ever takes it.

    A port is handed out once per process: callers pick several before starting any
    server, and two picks of the same still-free port once gave kube-scheduler and
    kube-controller-manager one port (the second died on "address already in use"
    while the first answered its health check).

    Nor inside the default NodePort range: a real node's kube-proxy answers NodePorts on
    127.0.0.1 too (``--iptables-localhost-nodeports``), so a connection to a loopback
    server on such a port is sent to whichever Service holds it (seen in CI: the
    apiserver on 30023, the restricted project's jump host Service on NodePort 30023,
    and every client call after it failed with "wrong version number")."""
    low = min(_ephemeral_low(), NODE_PORTS_FROM)
    for _ in range(200):
        port = random.randrange(_PORTS_FROM, low)  # a port, not a secret
        with _HANDED_OUT_LOCK:
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    raise LocalClusterError(f"no free loopback port from {_PORTS_FROM} to {low}")


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


_PORTS_FROM = 10000  # below: well-known and registered services a host may run
NODE_PORTS_FROM = 30000  # the apiserver's default --service-node-port-range starts here


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        low = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, _PORTS_FROM + 1000)


def log_tail(record: ProcessRecord, lines: int = 20) -> str:
    try:
        text = Path(record.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) of a live PID, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; start time is field 22 overall.
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[19])


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; for others this is a harmless ECHILD.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
