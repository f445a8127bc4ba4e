"""A Kubernetes call is sent once: its timeout is the longest it can take.

The apiserver here is a loopback socket that reads requests and never answers
(an apiserver stalled behind its load balancer), counting what arrives.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shared import kube
from shared.errors import KubeTemporaryError
from tests.loopback_http import requests_on


class SilentServer:
    """Accepts connections and reads requests; never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.requests = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(5)
            with self._lock:
                self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        if next(requests_on(conn), None) is None:
            return  # closed before a whole request came
        with self._lock:
            self.requests += 1

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[tuple[SilentServer, Path]]:
    server = SilentServer()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield server, path
    finally:
        server.close()


@pytest.mark.parametrize("how", ["call", "call_bytes"])
def test_a_read_that_times_out_is_sent_once(silent: tuple[SilentServer, Path], how: str) -> None:
    server, path = silent
    k = kube.connect(kubeconfig=path, timeout=0.3)
    try:
        call = k.call if how == "call" else k.call_bytes
        with pytest.raises(KubeTemporaryError, match="unreachable"):
            call(k.core.list_namespaced_pod, "default")
        time.sleep(0.3)  # a resend, if any, would have arrived by now
        assert server.requests == 1
    finally:
        k.close()
