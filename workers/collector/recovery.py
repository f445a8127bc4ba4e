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
from dataclasses import dataclass

from shared import metrics
from shared.errors import KubeError, StoreError
from shared.kube.pod_exec import exec_output
from shared.runlogs import store as log_store
from shared.runlogs.lines import strip_timestamp
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


def cut_marker(max_line: int) -> bytes:
    """What ends a line the collector cut at ``logs.max_line_bytes``."""
    return f" [berth] line cut at {max_line} bytes\n".encode()


def recover(
    t: Target,
    logs: LogStore,
    end: supervisor.OutputEnd,
    *,
    holder: str,
    max_line: int,
    end_ts: bytes,
) -> int:
    """Recover what the store lacks of ``end``'s output, then let the container go; the
    lines put back (0 when none were missing or they could not be had). The container
    is let go only once the store has them, or once they cannot be had: a collector
    that loses the lease or dies before leaves it held, for the next one to finish."""
    try:
        recovered = _recover(t, logs, end, holder=holder, max_line=max_line, end_ts=end_ts)
    except StoreError as e:
        log.warning("cannot recover the lines %s missed (read again later): %s", t.pod, e)
        return 0
    if recovered is None:
        return 0
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
) -> int | None:
    """The lines put back; None when the store changed hands under it (not let go)."""
    meta = logs.meta(t.job_id, t.attempt)
    missing = end.lines - (meta.lines - meta.unended)
    if missing <= 0 or meta.dropped or meta.done:
        return 0
    try:
        kept = _exec(t, supervisor.read_kept_command(end.directory), end.bytes)
    except KubeError as e:
        log.warning("cannot read the copy %s kept: %s", t.pod, e)
        return 0
    if len(kept) != end.bytes:
        log.warning("%s kept %d of its %d bytes: not recovered", t.pod, len(kept), end.bytes)
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

    The copy is the bytes the commands wrote; the runtime records a line without its
    ``\\r\\n`` or ``\\n``, so a copy line's ``\\r`` goes too. A stored line cut at
    ``max_line`` matches the copy's line it begins; a recovered line longer than that is
    cut the same way. A stored line that is only the end of a copy line, with no copy
    line equal to it further on and the next stored line the copy's next, is that line
    torn by a rotation (the follow lost its start with the old file's end): the whole
    line replaces it. The copy's last line without a newline is left out unless
    ``tail_stored`` (the collector stored it, glued to the end line)."""
    marker = cut_marker(max_line)
    stored = [
        (index, raw + b"\n")
        for index, entry in enumerate(entries)
        for raw in entry.data.split(b"\n")[:-1]
    ]
    contents = [strip_timestamp(raw) for _, raw in stored]
    copy = [line[:-1] if line.endswith(b"\r") else line for line in kept.split(b"\n")]
    if kept.endswith(b"\n") or not tail_stored:
        copy.pop()  # the empty rest after the last newline, or a last line still to come
    data: list[bytearray] = [bytearray() for _ in entries]
    counts = [0] * len(entries)
    at = recovered = 0
    for i, ((index, raw), text) in enumerate(zip(stored, contents, strict=True)):
        ts = raw[: len(raw) - len(text)]
        found = _find(text, copy, at, marker)
        torn = found is None
        if found is None:
            later = contents[i + 1][:-1] if i + 1 < len(contents) else None
            found = _find_torn(text[:-1], copy, at, later)
            if found is None:
                return None
        for line in copy[at:found]:
            data[index] += _raw(ts, line, max_line, marker)
        data[index] += _raw(ts, copy[found], max_line, marker) if torn else raw
        recovered += found - at
        counts[index] += found - at + 1
        at = found + 1
    out = [(e.id, bytes(d), n) for e, d, n in zip(entries, data, counts, strict=True)]
    rest = copy[at:]
    if rest:
        tail = b"".join(_raw(fallback_ts, line, max_line, marker) for line in rest)
        if out:
            entry_id, data_so_far, n = out[-1]
            out[-1] = (entry_id, data_so_far + tail, n + len(rest))
        else:
            out.append(("*", tail, len(rest)))
        recovered += len(rest)
    return Merged(out, recovered)


def _find(text: bytes, copy: list[bytes], at: int, marker: bytes) -> int | None:
    for i in range(at, len(copy)):
        if _same(text, copy[i], marker):
            return i
    return None


def _find_torn(rest: bytes, copy: list[bytes], at: int, later: bytes | None) -> int | None:
    for i in range(at, len(copy)):
        if _torn(rest, copy, i, later):
            return i
    return None


def _torn(rest: bytes, copy: list[bytes], at: int, later: bytes | None) -> bool:
    line = copy[at]
    if not rest or len(rest) >= len(line) or not line.endswith(rest):
        return False
    following = copy[at + 1] if at + 1 < len(copy) else None
    return later is None or later == following


def _same(text: bytes, line: bytes, marker: bytes) -> bool:
    """Whether the stored line's text (with its newline) is the copy's ``line``."""
    if text[:-1] == line:
        return True
    return text.endswith(marker) and line.startswith(text[: len(text) - len(marker)])


def _raw(ts: bytes, line: bytes, max_line: int, marker: bytes) -> bytes:
    raw = ts + line + b"\n"
    return raw if len(raw) <= max_line else raw[:max_line] + marker


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
