"""shared/startup_heap.py: start-up's garbage is collected, what is left is frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared import startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A long-lived process for the test: ``enable`` as its command does."""
    monkeypatch.setattr(startup_heap, "_enabled", False)
    monkeypatch.setattr(startup_heap, "_frozen", set())
    startup_heap.enable()
    yield
    gc.unfreeze()  # this test process keeps collecting as before


@pytest.mark.usefixtures("unfrozen")
def test_garbage_goes_first_and_what_is_kept_is_frozen() -> None:
    kept, dropped = _Node(), _Node()
    dropped.other = _Node()
    dropped.other.other = dropped  # a cycle: only the collector frees it
    gone = weakref.ref(dropped)
    del dropped
    before = gc.get_freeze_count()
    frozen = startup_heap.freeze("a test")
    assert gone() is None  # collected, not frozen for good
    assert frozen == gc.get_freeze_count() > before
    # What exists now is out of the generations a collection walks.
    assert not any(o is kept for o in gc.get_objects())


@pytest.mark.usefixtures("unfrozen")
def test_a_moment_is_frozen_once_per_process() -> None:
    assert startup_heap.freeze("a leader's start") is not None
    dropped_later = _Node()
    assert startup_heap.freeze("a leader's start") is None  # a second term's clients
    assert any(o is dropped_later for o in gc.get_objects())  # still collectable


def test_a_process_that_did_not_enable_it_never_freezes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup_heap, "_enabled", False)  # a test's in-process app or worker
    before = gc.get_freeze_count()
    assert startup_heap.freeze("an in-process app's start") is None
    assert gc.get_freeze_count() == before
