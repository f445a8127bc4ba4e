"""Ports for the processes tests and the local cluster start: never where a client's
own connection could take them while the server is down."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from cli.local.processes import free_port


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_bindable() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert all(10000 <= p < low for p in ports), sorted(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_a_free_port_is_never_a_node_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real node's kube-proxy takes loopback connections to NodePorts (30000-32767),
    so a server there would have its clients sent to a Service instead."""
    bounds: list[tuple[int, int]] = []

    def pick(start: int, stop: int) -> int:
        bounds.append((start, stop))
        return start + len(bounds)

    monkeypatch.setattr(random, "randrange", pick)
    free_port()
    assert bounds and all(stop <= 30000 for _, stop in bounds), bounds


def test_a_port_is_never_handed_out_twice_even_while_it_is_still_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers pick several ports before starting any server: a port still free at the
    second pick must not be given again (two control-plane components once got one)."""
    first = free_port()
    picks = iter([first, first, *range(first + 1, first + 100)])
    monkeypatch.setattr(random, "randrange", lambda *_: next(picks))
    second = free_port()
    assert first < second < first + 100
