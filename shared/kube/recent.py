"""Reads of slow-changing namespace objects, kept a few seconds and shared while in flight.

A submission reads its namespace three times (the Pod Security label, the
LimitRanges, the ResourceQuotas' hard limits) to refuse at once what could never
run. Those change when an operator edits them, not per run; yet in a burst of 500
submissions the three reads were 545 of the API's 650 ms (p50, bench scenario 2),
1,500 requests on an apiserver busy creating the burst's pods. Kept for
``ttl_s`` here, a burst makes a few reads per namespace instead. A change is seen
within ``ttl_s``; until then a run is judged on the previous answer, which is no
worse than a change made just after it was submitted: the scheduler and
provisioning meet the namespace as it is. A run past a quota's hard limit is
failed by the scheduler's next pass with the same message the API would have
given (``impossible: namespace quota ... allows at most ...``); a LimitRange or
Pod Security refusal fails the job with the apiserver's reason. Only the form of
the answer differs (a failed run, not a 422).

Failures are not kept: a failed read is tried again by the next caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["RecentReads"]

T = TypeVar("T")


class RecentReads:
    """Per process and cluster: each read's answer for ``ttl_s`` seconds, one read at a time
    per key (callers of a key being read wait for that read)."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, Any]] = {}
        """key -> (monotonic time it stops being fresh, the answer)."""
        self._reading: dict[str, threading.Lock] = {}

    def get(self, key: str, read: Callable[[], T]) -> T:
        """The fresh answer for ``key``, or ``read()``'s (kept if it returns)."""
        if self.ttl_s <= 0:
            return read()
        found = self._fresh(key)
        if found is not None:
            return found[0]  # type: ignore[no-any-return]
        with self._lock:
            one_read = self._reading.setdefault(key, threading.Lock())
        with one_read:
            found = self._fresh(key)  # read by the caller this one waited for
            if found is not None:
                return found[0]  # type: ignore[no-any-return]
            answer = read()
            with self._lock:
                self._answers[key] = (self._clock() + self.ttl_s, answer)
            return answer

    def forget(self) -> None:
        """Drop every answer: the next read of each key asks the apiserver."""
        with self._lock:
            self._answers.clear()

    def _fresh(self, key: str) -> tuple[Any] | None:
        with self._lock:
            entry = self._answers.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return (entry[1],)
