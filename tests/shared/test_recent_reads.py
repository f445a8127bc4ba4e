"""Namespace reads kept a few seconds: fresh answers shared, failures never kept."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from shared.kube.recent import RecentReads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def counting(answer: object = "quotas") -> tuple[list[int], Callable[[], object]]:
    calls: list[int] = []

    def read() -> object:
        calls.append(1)
        return answer

    return calls, read


def test_an_answer_is_kept_for_the_ttl_then_read_again(clock: Clock) -> None:
    reads = RecentReads(ttl_s=2.0, clock=clock)
    calls, read = counting()
    assert [reads.get("q", read) for _ in range(5)] == ["quotas"] * 5
    assert len(calls) == 1
    clock.now += 1.99
    reads.get("q", read)
    assert len(calls) == 1
    clock.now += 0.02
    reads.get("q", read)
    assert len(calls) == 2


def test_keys_are_kept_apart_and_forget_drops_them(clock: Clock) -> None:
    reads = RecentReads(ttl_s=60.0, clock=clock)
    quotas, read_quotas = counting("quotas")
    ranges, read_ranges = counting("ranges")
    assert reads.get("q", read_quotas) == "quotas"
    assert reads.get("r", read_ranges) == "ranges"
    reads.forget()
    reads.get("q", read_quotas)
    assert (len(quotas), len(ranges)) == (2, 1)


def test_a_failed_read_is_not_kept(clock: Clock) -> None:
    reads = RecentReads(ttl_s=60.0, clock=clock)

    def broken() -> object:
        raise TimeoutError("apiserver away")

    with pytest.raises(TimeoutError):
        reads.get("q", broken)
    calls, read = counting()
    assert reads.get("q", read) == "quotas"
    assert len(calls) == 1


def test_a_zero_ttl_reads_every_time(clock: Clock) -> None:
    reads = RecentReads(ttl_s=0.0, clock=clock)
    calls, read = counting()
    for _ in range(3):
        reads.get("q", read)
    assert len(calls) == 3


def test_callers_of_a_key_being_read_wait_for_that_read_instead_of_reading() -> None:
    reads = RecentReads(ttl_s=60.0)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> object:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return "quotas"

    first = threading.Thread(target=reads.get, args=("q", slow))
    first.start()
    assert started.wait(10)
    answers: list[object] = []
    others = [
        threading.Thread(target=lambda: answers.append(reads.get("q", slow))) for _ in range(4)
    ]
    for t in others:
        t.start()
    release.set()
    for t in (first, *others):
        t.join(10)
    assert answers == ["quotas"] * 4
    assert len(calls) == 1
