"""A TCP relay on an address of the test's own: pods reach a loopback-only process.

Berth's API listens on 127.0.0.1, which a pod cannot reach. A run with
``dstack: true`` talks to the API at ``api.url_for_runs``; on the real node that
is this relay, listening on the node's bridge address (the project's own bridge,
where CoreDNS listens too) and copying bytes both ways to the API. Stopped by
the fixture that started it.
"""

from __future__ import annotations

import contextlib
import socket
import threading

_CHUNK = 65536
_TIMEOUT_S = 60.0


class Relay:
    def __init__(self, host: str) -> None:
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.5)
        self.host, self.port = host, int(self._listener.getsockname()[1])
        self.address = f"{host}:{self.port}"
        self._target: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="relay", daemon=True)

    def start(self, target: tuple[str, int]) -> None:
        self._target = target
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        assert self._target is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=_TIMEOUT_S)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(_TIMEOUT_S)
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        source.close()  # each socket is the source of exactly one pump
