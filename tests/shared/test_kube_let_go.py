"""A streamed answer cut short never lends its connection to the next request.

The server here is a loopback socket: its stream (a watch, a log follow) goes on
after the client stopped reading, so when the next request arrives on the same
connection, the stream's next chunk comes before that request's answer, as an
apiserver's watch event can.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3

from shared import kube
from tests.loopback_http import requests_on

_STREAM_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
_LATE_CHUNK = b"6\r\nsecond\r\n"
_PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_answer, args=(conn,), daemon=True).start()


def _answer(conn: socket.socket) -> None:
    streaming = False
    with conn:
        for request in requests_on(conn):
            if request.startswith(b"GET /stream"):
                conn.sendall(_STREAM_HEAD)
                streaming = True
            else:
                conn.sendall((_LATE_CHUNK if streaming else b"") + _PLAIN)


@pytest.fixture
def pool() -> Iterator[urllib3.HTTPConnectionPool]:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(listener,), daemon=True).start()
    connections = urllib3.HTTPConnectionPool(
        "127.0.0.1", listener.getsockname()[1], maxsize=1, retries=False, timeout=5
    )
    try:
        yield connections
    finally:
        connections.close()
        listener.close()


def test_a_stream_let_go_unread_closes_its_connection(pool: urllib3.HTTPConnectionPool) -> None:
    stream = pool.request("GET", "/stream", preload_content=False)
    assert stream.read(5) == b"first"
    kube.let_go(stream, read_whole=False)
    assert pool.request("GET", "/plain").data == b"ok"


def test_a_stream_put_back_unread_breaks_the_next_request(
    pool: urllib3.HTTPConnectionPool,
) -> None:
    # What let_go prevents: the next request on that connection fails (the stream left
    # unread, or its late chunk read as the answer's status line, as in a CI run).
    stream = pool.request("GET", "/stream", preload_content=False)
    assert stream.read(5) == b"first"
    stream.release_conn()
    with pytest.raises(urllib3.exceptions.ProtocolError, match="Connection aborted"):
        pool.request("GET", "/plain")
