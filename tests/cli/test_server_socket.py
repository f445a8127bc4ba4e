"""``api.reuse_port``: several API processes listen on one address (issue 19)."""

from __future__ import annotations

import socket

import pytest

from cli.local.processes import free_port
from cli.server_commands import reuse_port_socket
from shared.errors import ConfigError


def test_tworeuse_port_sockets_listen_on_one_port_and_both_take_connections() -> None:
    port = free_port()
    listeners = [reuse_port_socket("127.0.0.1", port, backlog=64) for _ in range(2)]
    clients: list[socket.socket] = []
    try:
        # The kernel hashes each new connection to one of the two: with 32, both get
        # some unless a 1 in 2**31 chance puts them all on one.
        for _ in range(32):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        taken = [_accept_all(listener) for listener in listeners]
        assert all(n > 0 for n in taken), taken
        assert sum(taken) == len(clients)
    finally:
        for s in [*clients, *listeners]:
            s.close()


def test_a_port_held_without_reuse_port_is_refused_naming_the_setting() -> None:
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        port = plain.getsockname()[1]
        with pytest.raises(ConfigError, match="BERTH_API__REUSE_PORT") as caught:
            reuse_port_socket("127.0.0.1", port, backlog=16)
    assert caught.value.field == "api.port"


def _accept_all(listener: socket.socket) -> int:
    listener.setblocking(False)
    taken = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return taken
        conn.close()
        taken += 1
