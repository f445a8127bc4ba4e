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

import contextlib
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

_EXEC_TIMEOUT_S = 120.0  # reading 32 MiB from a pod on a busy node takes seconds
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
    """Recover what the store lacks of ``end``'s output and let the container go; the
    lines put back (0 when none were missing or they could not be had)."""
    try:
        meta = logs.meta(t.job_id, t.attempt)
        missing = end.lines - (meta.lines - meta.unended)
        if missing <= 0 or meta.dropped or meta.done:
            _exec(t, supervisor.release_command(end.directory), 0)
            return 0
        try:
            kept = _exec(t, supervisor.read_kept_command(end.directory), end.bytes)
        except KubeError:
            # The copy could not be read (or was more than it said): let PID 1 end now,
            # not at the end of its hold.
            with contextlib.suppress(KubeError):
                _exec(t, supervisor.release_command(end.directory), 0)
            raise
        if len(kept) != end.bytes:
            log.warning("%s kept %d of its %d bytes: not recovered", t.pod, len(kept), end.bytes)
            return 0
        entries = _all_entries(logs, t.job_id, t.attempt)
        merged = merge(entries, kept, max_line=max_line, fallback_ts=end_ts)
        if merged is None or not merged.recovered:
            log.warning("the stored output of %s is not its own copy's: not recovered", t.pod)
            return 0
        last_id = entries[-1].id if entries else ""
        result = logs.rewrite(
            t.job_id,
            t.attempt,
            merged.entries,
            recovered=merged.recovered,
            cursor=meta.cursor,
            last_id=last_id,
            holder=holder,
        )
    except (KubeError, StoreError) as e:
        log.warning("cannot recover the lines %s missed: %s", t.pod, e)
        return 0
    if result != log_store.APPENDED:
        log.info("output of %s moved while recovering (%d): read again", t.pod, result)
        return 0
    metrics.LOG_LINES_RECOVERED.inc(merged.recovered)
    log.info("recovered %d lines of %s the kubelet never served", merged.recovered, t.pod)
    return merged.recovered


def merge(entries: list[Entry], kept: bytes, *, max_line: int, fallback_ts: bytes) -> Merged | None:
    """The stored lines laid over the container's copy ``kept``, every copy line in
    order (a missing line under the time of the stored line after it, or
    ``fallback_ts``, the end line's, after the last); None if a stored line is not
    in the copy after the one before it (the two disagree: nothing is rewritten). A
    stored line cut at ``max_line`` matches the copy's line it begins; a recovered line
    longer than that is cut the same way. A stored line that is only the end of a copy
    line, with the next stored line the copy's next, is that line torn by a rotation
    (the follow lost its start with the old file's end): the whole line replaces it."""
    marker = cut_marker(max_line)
    stored = [
        (index, raw + b"\n")
        for index, entry in enumerate(entries)
        for raw in entry.data.split(b"\n")[:-1]
    ]
    contents = [strip_timestamp(raw) for _, raw in stored]
    copy = kept.split(b"\n")
    # The output's last line, if it has no newline, is the container's stdout's last
    # bytes: the runtime passes them on when the stream closes, at the container's exit,
    # so the kubelet serves them after the end line. Left out unless already stored.
    if copy[-1] == b"" or not (contents and contents[-1][:-1] == copy[-1]):
        copy.pop()
    data: list[bytearray] = [bytearray() for _ in entries]
    counts = [0] * len(entries)
    at = recovered = 0
    for i, ((index, raw), text) in enumerate(zip(stored, contents, strict=True)):
        ts = raw[: len(raw) - len(text)]
        later = contents[i + 1][:-1] if i + 1 < len(contents) else None
        start = at
        torn = False
        while at < len(copy):
            if _same(text, copy[at], marker):
                break
            if _torn(text[:-1], copy, at, later):
                torn = True
                break
            at += 1
        if at == len(copy):
            return None
        for line in copy[start:at]:
            data[index] += _raw(ts, line, max_line, marker)
        data[index] += _raw(ts, copy[at], max_line, marker) if torn else raw
        recovered += at - start
        counts[index] += at - start + 1
        at += 1
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


def _exec(t: Target, command: list[str], limit: int) -> bytes:
    return exec_output(
        t.kube,
        t.pod,
        t.namespace,
        container=CONTAINER,
        command=command,
        timeout_s=_EXEC_TIMEOUT_S,
        limit_bytes=limit,
    )
