"""Waiting without sleeping blindly: poll a condition until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_INTERVAL_S = 0.05  # fine enough for sub-second assertions, cheap for the apiserver


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Return the first truthy value of ``check()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(_INTERVAL_S)
        last = check()
    return last
