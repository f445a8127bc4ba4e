"""Reading HTTP/1.1 requests off a raw loopback socket, for test servers that answer by hand."""

from __future__ import annotations

import socket
from collections.abc import Iterator


def requests_on(conn: socket.socket) -> Iterator[bytes]:
    """Each request's head (up to its blank line) as it arrives on ``conn``, until the
    client closes or the socket fails. Bodies are not read: the tests send none."""
    data = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except OSError:
            return
        if not chunk:
            return
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, data = data.partition(b"\r\n\r\n")
            yield head
