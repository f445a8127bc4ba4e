"""Timestamped log lines as the kubelet serves them, and where a reader resumes.

With ``timestamps=true`` the log API prefixes every line with its RFC 3339
time in nanoseconds (``2026-12-04T07:09:27.123456789Z line``; trailing zeros
trimmed, as Go's ``RFC3339Nano`` writes it). The collector keeps these raw
lines: the timestamp is what it resumes from and what ``--timestamps`` and
``--since`` use.

**The cursor.** ``sinceTime`` reaches the kubelet in whole seconds, so a
reconnect re-reads part of a second that was already stored. The cursor is
the last stored line's time in nanoseconds plus how many stored lines carry
exactly that time: re-read lines older than it, and the first ``n`` at its
time, are the ones already kept. Lines are read in file order, so this drops
exactly the repeats, even when several lines share one timestamp.

**Where a re-read cannot start at the cursor.** The kubelet serves a container's
current log file only, and rotates it at ``containerLogMaxSize`` even in the middle
of a line. A re-read after a rotation can then begin with the *rest* of a line
whose start is in a rotated file, under a later timestamp; and a ``sinceTime``
that falls between the parts of a long line begins with a part that has no
timestamp at all. Neither is a new line. The cursor remembers whether the last
stored line was cut at ``logs.max_line_bytes`` with its end not read yet
(``cut``), so the rest that a re-read begins with is dropped, not stored as a
second cut line.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field

_NS = 1_000_000_000


@dataclass(frozen=True)
class Cursor:
    """The last stored line's time (ns since the epoch) and how many stored lines have it."""

    ts_ns: int = 0
    n: int = 0
    cut: bool = False
    """The last stored line was cut short and the newline ending it was not read yet."""

    def since_time(self) -> str | None:
        """``sinceTime`` for the log API: the cursor's second (None from the start)."""
        if self.ts_ns == 0:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts_ns // _NS))


@dataclass
class LineTimes:
    """Parses line timestamps, caching the last second (most lines share one)."""

    _prefix: bytes = b""
    _seconds: int = 0

    def ns(self, line: bytes) -> int | None:
        """The line's timestamp in ns since the epoch; None when it has none."""
        space = line.find(b" ", 0, 40)
        if space < 20 or line[space - 1 : space] != b"Z":
            return None
        stamp = line[:space]
        head = stamp[:19]  # 2026-12-04T07:09:27
        if head != self._prefix:
            try:
                parsed = time.strptime(head.decode("ascii"), "%Y-%m-%dT%H:%M:%S")
            except (UnicodeDecodeError, ValueError):
                return None
            self._prefix, self._seconds = head, calendar.timegm(parsed)
        frac = stamp[19:-1]
        if not frac:
            return self._seconds * _NS
        if frac[:1] != b"." or not frac[1:].isdigit() or len(frac) > 10:
            return None
        return self._seconds * _NS + int(frac[1:].ljust(9, b"0"))


@dataclass
class Deduper:
    """Drops re-read lines at or before a cursor and moves the cursor past kept ones."""

    cursor: Cursor
    times: LineTimes = field(default_factory=LineTimes)
    _skip: int = field(init=False, default=0)
    """Lines at the cursor's own time still to drop: those stored before this read."""
    _timed: bool = field(init=False, default=False)
    """This read has served a line with a timestamp."""

    def __post_init__(self) -> None:
        self._skip = self.cursor.n

    def keep(self, line: bytes, *, cut: bool = False) -> bool:
        """True if ``line`` is new; the cursor then counts it (``cut``: the line is the
        start of a longer one, whose end is still to come)."""
        ts = self.times.ns(line)
        if ts is None:
            if self.cursor.ts_ns and not self._timed:
                # A read that resumed mid-line: the rest of a line begun before sinceTime.
                return False
            # No timestamp (not the log API's format): new by position, time unchanged.
            self.cursor = Cursor(self.cursor.ts_ns, self.cursor.n + 1, cut)
            return True
        self._timed = True
        if ts < self.cursor.ts_ns:
            return False
        if ts == self.cursor.ts_ns:
            if self._skip > 0:
                self._skip -= 1
                if not self._skip and not cut and self.cursor.cut:
                    # The stored cut line, served whole this time (its newline came in
                    # the chunk that took it past the limit): its end has been read.
                    self.cursor = Cursor(ts, self.cursor.n)
                return False
            self.cursor = Cursor(ts, self.cursor.n + 1, cut)
            return True
        self._skip = 0
        if self.cursor.cut:
            # The stored cut line's start is no longer served (its file was rotated):
            # this later-stamped line is its rest. Its newline ends the cut line.
            self.cursor = Cursor(self.cursor.ts_ns, self.cursor.n)
            return False
        self.cursor = Cursor(ts, 1, cut)
        return True

    def end_cut(self) -> None:
        """The newline ending the cut line was read: later lines are new again."""
        if self.cursor.cut:
            self.cursor = Cursor(self.cursor.ts_ns, self.cursor.n)


def strip_timestamp(line: bytes) -> bytes:
    """The line as the program printed it."""
    space = line.find(b" ", 0, 40)
    if space < 20 or line[space - 1 : space] != b"Z":
        return line
    return line[space + 1 :]


def timestamp_of(line: bytes) -> bytes:
    """The line's timestamp with the space after it (what :func:`strip_timestamp`
    takes off); b"" when it has none."""
    return line[: len(line) - len(strip_timestamp(line))]


def parse_since(text: str, *, now: float) -> int:
    """``--since`` as ns since the epoch: a duration back from now (``90s``, ``10m``,
    ``2h``, ``1d``) or an RFC 3339 time; ValueError names what was wrong."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return int((now - float(text[:-1]) * units[text[-1]]) * _NS)
    ns = LineTimes().ns(text.replace("+00:00", "Z").encode() + b" ")
    if ns is None:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 10m, 2h, 1d)"
            " nor a time like 2026-12-04T07:00:00Z"
        )
    return ns
