"""The pure part of the log store: kubelet timestamps, the resume cursor, --since."""

from __future__ import annotations

import calendar
import time

import pytest

from shared.runlogs.lines import Cursor, Deduper, LineTimes, parse_since, strip_timestamp

BASE = calendar.timegm(time.strptime("2026-12-04T07:09:27", "%Y-%m-%dT%H:%M:%S"))


def test_a_kubelet_timestamp_is_read_to_the_nanosecond_with_trailing_zeros_trimmed() -> None:
    times = LineTimes()
    assert times.ns(b"2026-12-04T07:09:27.123456789Z hello\n") == BASE * 10**9 + 123456789
    assert times.ns(b"2026-12-04T07:09:27.5Z x\n") == BASE * 10**9 + 500_000_000
    assert times.ns(b"2026-12-04T07:09:28Z x\n") == (BASE + 1) * 10**9


@pytest.mark.parametrize(
    "line",
    [b"hello world\n", b"\x00\xff\xfe binary\n", b"2026-13-40T99:99:99Z x\n", b"\n", b""],
)
def test_a_line_without_a_valid_timestamp_has_none_and_never_raises(line: bytes) -> None:
    assert LineTimes().ns(line) is None


def test_strip_timestamp_gives_the_line_as_printed() -> None:
    assert strip_timestamp(b"2026-12-04T07:09:27.1Z epoch 1 loss=0.9\n") == b"epoch 1 loss=0.9\n"
    assert strip_timestamp(b"no stamp here\n") == b"no stamp here\n"


def _lines(stamps: list[str]) -> list[bytes]:
    return [f"2026-12-04T07:09:{s}Z line {i}\n".encode() for i, s in enumerate(stamps)]


def test_a_reread_from_the_cursor_second_keeps_exactly_the_lines_not_stored_yet() -> None:
    # Three lines share one timestamp; the collector stored the first two, then died.
    lines = _lines(["26.9", "27.1", "27.1", "27.1", "27.2", "28"])
    first = Deduper(Cursor())
    stored = [line for line in lines[:3] if first.keep(line)]
    assert stored == lines[:3]
    assert first.cursor == Cursor(BASE * 10**9 + 100_000_000, 2)
    # The reconnect reads from the cursor's second, which repeats what was stored.
    again = Deduper(first.cursor)
    kept = [line for line in lines if again.keep(line)]
    assert kept == lines[3:]
    assert again.cursor == Cursor((BASE + 1) * 10**9, 1)


def test_every_line_is_kept_once_whatever_the_reconnect_points() -> None:
    # Non-decreasing, as a file is; up to three lines share a timestamp.
    lines = _lines([f"{27 + i // 7}.{i % 7 // 3}" for i in range(60)])
    for cut in range(1, len(lines)):
        d = Deduper(Cursor())
        stored = [line for line in lines[:cut] if d.keep(line)]
        resume = Deduper(d.cursor)
        # The log API restarts at the cursor's whole second: anything from there on.
        second = d.cursor.ts_ns // 10**9 * 10**9
        reread = [line for line in lines if LineTimes().ns(line) >= second]  # type: ignore[operator]
        stored += [line for line in reread if resume.keep(line)]
        assert stored == lines, cut


def test_a_reread_that_starts_with_the_rest_of_a_cut_line_does_not_store_it_again() -> None:
    # The stored cut line (its first max_line bytes) is at 27.1; its newline was not
    # read when the stream broke, and the kubelet has since rotated the log file in the
    # middle of the line: the current file begins with the line's rest, stamped later.
    head, rest, after = _lines(["27.1", "29.5", "30"])
    first = Deduper(Cursor())
    assert first.keep(head, cut=True)
    assert first.cursor == Cursor(BASE * 10**9 + 100_000_000, 1, cut=True)
    again = Deduper(first.cursor)
    assert [line for line in (rest, after) if again.keep(line)] == [after]
    assert again.cursor == Cursor((BASE + 3) * 10**9, 1)


def test_a_reread_that_serves_the_cut_line_again_keeps_what_follows_its_end() -> None:
    head, after = _lines(["27.1", "27.1"])
    first = Deduper(Cursor())
    assert first.keep(head, cut=True)
    again = Deduper(first.cursor)
    assert not again.keep(head, cut=True)  # the same start, skipped ...
    again.end_cut()  # ... and its rest up to the newline (the collector skips it)
    assert again.keep(after)
    assert again.cursor == Cursor(BASE * 10**9 + 100_000_000, 2)


def test_a_reread_that_serves_the_cut_line_whole_ends_its_cut() -> None:
    """The re-read's chunk brought the cut line's newline with it: the line comes whole
    (the collector cuts it again, but as a whole line), and what follows is new."""
    head, later = _lines(["27.1", "31"])
    first = Deduper(Cursor())
    assert first.keep(head, cut=True)
    again = Deduper(first.cursor)
    assert not again.keep(head)  # the stored line, skipped, and ended
    assert not again.cursor.cut
    assert again.keep(later)  # not taken for the cut line's rest


def test_once_the_cut_line_ended_a_later_line_is_new_even_on_a_reread() -> None:
    head, later = _lines(["27.1", "31"])
    first = Deduper(Cursor())
    assert first.keep(head, cut=True)
    first.end_cut()
    assert Deduper(first.cursor).keep(later)


def test_a_reread_starting_inside_a_line_drops_that_lines_unstamped_rest() -> None:
    # sinceTime fell between two parts of a long line: the kubelet serves the later
    # part with no timestamp (only a line's first part has one).
    stamped = _lines(["27.1", "28"])
    first = Deduper(Cursor())
    assert first.keep(stamped[0])
    again = Deduper(first.cursor)
    kept = [line for line in (b"tail of an older line\n", *stamped) if again.keep(line)]
    assert kept == [stamped[1]]
    # From the very start (nothing stored), unstamped lines are output like any other.
    assert Deduper(Cursor()).keep(b"no stamp\n")


def test_since_takes_durations_and_times_and_names_what_is_wrong() -> None:
    now = BASE + 600.0
    assert parse_since("10m", now=now) == BASE * 10**9
    assert parse_since("1.5h", now=now) == int((now - 5400) * 10**9)
    assert parse_since("2026-12-04T07:09:27Z", now=now) == BASE * 10**9
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", now=now)
