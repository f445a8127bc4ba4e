"""Fixtures of the reliability suite.

A fault module asks for ``world``: its own local cluster and Berth stack,
started once for the module and stopped by PID after it, so killing
processes never touches the session's cluster or the e2e stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.world import World, open_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = open_world(tmp_path_factory.mktemp("world"))
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="package")
def calm_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One cluster and stack, never faulted, for the input, security and lateness tests."""
    w = open_world(tmp_path_factory.mktemp("calm"))
    try:
        yield w
    finally:
        w.close()
