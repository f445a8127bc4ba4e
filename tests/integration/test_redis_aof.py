"""Redis as Berth runs it keeps acknowledged writes across a hard kill."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from cli.local.cluster import redis_argv
from cli.local.processes import free_port, is_running, start_process, stop_process
from tests.polling import wait_until

pytestmark = pytest.mark.integration


def _ping(client: redis.Redis[bytes]) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_keeps_acknowledged_writes_after_sigkill_and_restart(tmp_path: Path) -> None:
    port = free_port()
    argv = redis_argv(port, tmp_path / "data")
    first = start_process("redis-aof", argv, log_dir=tmp_path)
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        wait_until(lambda: _ping(client), timeout=10, what="redis up")
        for i in range(100):
            client.set(f"run:{i}", f"accepted-{i}")

        os.kill(first.pid, signal.SIGKILL)  # no shutdown hook runs: only the AOF can save us
        wait_until(lambda: not is_running(first), timeout=10, what="redis killed")

        second = start_process("redis-aof", argv, log_dir=tmp_path)
        try:
            wait_until(lambda: _ping(client), timeout=10, what="redis back")
            assert [client.get(f"run:{i}") for i in range(100)] == [
                f"accepted-{i}".encode() for i in range(100)
            ]
        finally:
            stop_process(second)
    finally:
        client.close()
        stop_process(first)
