"""Putting back the lines the kubelet never served, from the container's own copy.

A container whose output could meet a log rotation keeps a copy of it and, once its
commands are done, prints an end line and holds on (``workers/supervisor.py``). The
follower that reads that line compares the container's count with the lines stored;
if some never came, it reads the copy through ``exec`` while the container still
lives, lays the stored lines over it (they are the copy's lines in order, with gaps),
and swaps in a stream where each missing line sits in place, under the timestamp of
the stored line it precedes (the end line's after the last). Either way the last
exec lets the container exit.

The stream keeps its entry ids (:meth:`LogStore.rewrite`): a missing line joins the
entry of the stored line after it, so a reader that had read past that entry goes on
from where it was, and one that reads later gets every line in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from shared import metrics
from shared.errors import KubeError, StoreError
from shared.kube.pod_exec import exec_output
from shared.runlogs import store as log_store
from shared.runlogs.lines import strip_timestamp, timestamp_of
from shared.runlogs.store import Entry, LogStore
from workers import supervisor
from workers.collector.target import CONTAINER, Target

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 120.0  # reading 32 MiB from a pod on a busy node takes seconds
_RELEASE_TIMEOUT_S = 10.0
_PAGE = 1000


@dataclass(frozen=True)
class Merged:
    entries: list[tuple[str, bytes, int]]
    """(entry id, whole raw lines, how many); id ``*`` for a stream that had none."""
    recovered: int
    unended: int = 0
    """Of ``recovered``, the output's last line when it had no newline (ended here)."""


def cut_marker(max_line: int) -> bytes:
    """What ends a line the collector cut at ``logs.max_line_bytes``."""
    return f" [berth] line cut at {max_line} bytes\n".encode()


def cut(raw: bytes, max_line: int) -> bytes:
    """A raw line longer than ``max_line`` as the collector stores it: its first
    ``max_line`` bytes (the timestamp counted) and the marker."""
    return raw[:max_line] + cut_marker(max_line)


def recover(
    t: Target,
    logs: LogStore,
    end: supervisor.OutputEnd,
    *,
    holder: str,
    max_line: int,
    end_ts: bytes,
    cut_tail: bool = False,
) -> int | None:
    """Recover what the store lacks of ``end``'s output, then let the container go; the
    lines put back (0 when none were missing or they could not be had), or None when
    the store failed or changed hands under it: the caller reads the end line again
    (the container, not let go, still holds on). The container is let go only once the
    store has the lines, or once they cannot be had. ``cut_tail``: the stored last line
    is the output's last, cut, which had no newline (the store does not know yet)."""
    try:
        recovered = _recover(
            t, logs, end, holder=holder, max_line=max_line, end_ts=end_ts, cut_tail=cut_tail
        )
    except StoreError as e:
        log.warning("cannot recover the lines %s missed (reading again): %s", t.pod, e)
        return None
    if recovered is None:
        return None
    try:
        _exec(t, supervisor.release_command(end.directory), 0, timeout_s=_RELEASE_TIMEOUT_S)
    except KubeError as e:
        log.warning("cannot let %s end before its hold does: %s", t.pod, e)
    if recovered:
        metrics.LOG_LINES_RECOVERED.inc(recovered)
        log.info("recovered %d lines of %s the kubelet never served", recovered, t.pod)
    return recovered


def _recover(
    t: Target,
    logs: LogStore,
    end: supervisor.OutputEnd,
    *,
    holder: str,
    max_line: int,
    end_ts: bytes,
    cut_tail: bool,
) -> int | None:
    """The lines put back; None when the store changed hands under it (not let go)."""
    meta = logs.meta(t.job_id, t.attempt)
    if cut_tail:
        meta = replace(meta, unended=meta.unended + 1)
    # Bounds against a forged end line (the commands can print one): no copy bigger
    # than the store keeps, and one that holds the lines it says.
    if meta.dropped or meta.done or end.bytes > logs.cap_bytes:
        return 0
    # Only a repeat served: the first, and an output's last line with no newline
    # glued to it (which the count does not count), may have been rotated away.
    if not meta.lacking(end.lines) and not (end.again and not meta.unended):
        return 0
    try:
        kept = _exec(t, supervisor.read_kept_command(end.directory), end.bytes)
    except KubeError as e:
        log.warning("cannot read the copy %s kept: %s", t.pod, e)
        return 0
    if len(kept) != end.bytes or kept.count(b"\n") != end.lines:
        log.warning("%s's copy is not what its end line says: not recovered", t.pod)
        return 0
    entries = _all_entries(logs, t.job_id, t.attempt)
    # Before the end line, only the output's last line can have been ended by the
    # collector (it came glued to the end line): that line is then stored.
    merged = merge(
        entries, kept, max_line=max_line, fallback_ts=end_ts, tail_stored=meta.unended > 0
    )
    if merged is None:
        log.warning("the stored output of %s is not in its copy: not recovered", t.pod)
        return 0
    if not merged.recovered:
        return 0
    result = logs.rewrite(
        t.job_id,
        t.attempt,
        merged.entries,
        recovered=merged.recovered,
        unended=merged.unended,
        cursor=meta.cursor,
        last_id=entries[-1].id if entries else "",
        holder=holder,
    )
    if result == log_store.FINISHED:
        return 0
    if result != log_store.APPENDED:
        log.info("output of %s moved while recovering (%d): read again", t.pod, result)
        return None
    return merged.recovered


def merge(
    entries: list[Entry],
    kept: bytes,
    *,
    max_line: int,
    fallback_ts: bytes,
    tail_stored: bool = False,
) -> Merged | None:
    """The stored lines laid over the container's copy ``kept``, every copy line in
    order (a missing line under the time of the stored line after it, or
    ``fallback_ts``, the end line's, after the last); None if a stored line is not
    in the copy after the one before it (the two disagree: nothing is rewritten).

    The copy is the bytes the commands wrote; containerd records a line without its
    ``\\r\\n`` (CRI-O keeps the ``\\r``: either matches), and a recovered line is
    written without it. A stored line cut at ``max_line`` matches the copy's line it
    begins; a recovered line longer than that is cut the same way. A stored line that
    is only the end of a copy line is that line torn by a rotation (the follow lost its
    start with the old file's end) when the next stored line is the copy's next, or
    when nothing else matches: the whole line replaces it. The copy's last line, when
    it has no newline, is the stored last line if ``tail_stored`` (the collector stored
    it, glued to the end line, whole, cut or torn: the whole line, cut as the collector
    cuts, is stored in its place), and recovered otherwise: the end line is printed
    right after it, so the kubelet served neither (a rotation while the container held
    on took them; the follower read a repeat of the end line)."""
    marker = cut_marker(max_line)
    stored = [
        (index, raw + b"\n")
        for index, entry in enumerate(entries)
        for raw in entry.data.split(b"\n")[:-1]
    ]
    contents = [strip_timestamp(raw) for _, raw in stored]
    parts = kept.split(b"\n")
    copy = [line[:-1] if line.endswith(b"\r") else line for line in parts[:-1]]
    tail: tuple[int, bytes] | None = None
    if tail_stored and parts[-1] and stored:
        index, raw = stored.pop()
        if not _within(contents.pop(), parts[-1], marker):
            return None
        tail = index, _raw(timestamp_of(raw), parts[-1], max_line)
    data: list[bytearray] = [bytearray() for _ in entries]
    counts = [0] * len(entries)
    at = recovered = 0
    for i, ((index, raw), text) in enumerate(zip(stored, contents, strict=True)):
        ts = raw[: len(raw) - len(text)]
        later = contents[i + 1][:-1] if i + 1 < len(contents) else None
        found, torn = _place(text, copy, at, later, marker)
        if found is None:
            return None
        for line in copy[at:found]:
            data[index] += _raw(ts, line, max_line)
        data[index] += _raw(ts, copy[found], max_line) if torn else raw
        recovered += found - at
        counts[index] += found - at + 1
        at = found + 1
    rest = copy[at:]
    unended = 0
    if tail is None and parts[-1] and not tail_stored:
        rest.append(parts[-1])
        unended = 1
    recovered += len(rest)
    if tail is not None:  # the rest comes before it, under its time
        index, raw = tail
        ts = timestamp_of(raw)
        data[index] += b"".join(_raw(ts, line, max_line) for line in rest) + raw
        counts[index] += len(rest) + 1
        rest = []
    out = [(e.id, bytes(d), n) for e, d, n in zip(entries, data, counts, strict=True)]
    if rest:
        after = b"".join(_raw(fallback_ts, line, max_line) for line in rest)
        if out:
            entry_id, data_so_far, n = out[-1]
            out[-1] = (entry_id, data_so_far + after, n + len(rest))
        else:
            out.append(("*", after, len(rest)))
    return Merged(out, recovered, unended)


def _place(
    text: bytes, copy: list[bytes], at: int, later: bytes | None, marker: bytes
) -> tuple[int | None, bool]:
    """Where the stored line ``text`` is in the copy from ``at``, and whether as a torn
    rest: the nearer of its exact match and a torn line the next stored line confirms;
    an unconfirmed torn line only when there is no exact match."""
    exact = next((i for i in range(at, len(copy)) if _same(text, copy[i], marker)), None)
    rest = text[:-1]
    if exact is not None:
        if later is None:
            return exact, False
        for i in range(at, exact):
            if _torn(rest, copy, i, later):
                return i, True
        return exact, False
    for i in range(at, len(copy)):
        if _torn(rest, copy, i, later):
            return i, True
    return None, False


def _torn(rest: bytes, copy: list[bytes], i: int, later: bytes | None) -> bool:
    line = copy[i]
    if not rest or len(rest) >= len(line) or not line.endswith(rest):
        return False
    if later is None:
        return True
    following = copy[i + 1] if i + 1 < len(copy) else None
    return following is not None and later in (following, following + b"\r")


def _same(text: bytes, line: bytes, marker: bytes) -> bool:
    """Whether the stored line's text (with its newline) is the copy's ``line``."""
    if text[:-1] in (line, line + b"\r"):
        return True
    return text.endswith(marker) and line.startswith(text[: len(text) - len(marker)])


def _within(text: bytes, last: bytes, marker: bytes) -> bool:
    """Whether the stored line's text (with its newline, or cut) is all or part of the
    copy's ``last`` line, which had no newline. Glued to the end line, it is that line:
    whole, cut at ``max_line``, or torn by a rotation (its start gone with the old
    file), or both; the copy's whole line is stored in its place."""
    body = text[: len(text) - len(marker)] if text.endswith(marker) else text[:-1]
    return body in last


def _raw(ts: bytes, line: bytes, max_line: int) -> bytes:
    """A recovered line as the collector would have stored it (cut as it cuts)."""
    raw = ts + line
    return raw + b"\n" if len(raw) <= max_line else cut(raw, max_line)


def _all_entries(logs: LogStore, job_id: str, attempt: int) -> list[Entry]:
    found: list[Entry] = []
    after = "-"
    while page := logs.entries(job_id, attempt, after=after, count=_PAGE):
        found += page
        after = page[-1].id
    return found


def _exec(
    t: Target, command: list[str], limit: int, *, timeout_s: float = _READ_TIMEOUT_S
) -> bytes:
    return exec_output(
        t.kube,
        t.pod,
        t.namespace,
        container=CONTAINER,
        command=command,
        timeout_s=timeout_s,
        limit_bytes=limit,
    )
