"""Following one job attempt's container output into the log store.

A :class:`Follower` is a thread per started container. It streams the log API
with ``timestamps=true`` (follow while the container runs, a plain read once it
has ended), keeps whole lines that are new past the stored cursor, and hands
them to the store in batches (:class:`_Batch`: one Redis write per
``flush_interval_s`` or ``chunk_bytes``). Whatever goes wrong (the apiserver,
the kubelet, Redis), it drops what it has not stored and reads again from the
stored cursor, so the store is the only state and the kubelet's file the
buffer: nothing it serves is lost while the pod exists, and nothing is stored twice.
What it never serves (the end of a file its follow left at a rotation, files rotated
away while no collector ran) is counted instead: the container's PID 1 reports how
many lines it printed, and the finish stores how many of them never came. A container
whose output could meet a rotation also keeps a copy and holds on at its end line, so
the follower that reads that line puts the missing lines back from the copy first
(:mod:`.recovery`).

Its end: the container ended (the pod watch says so) and a read reached the
end of its output, then the attempt is marked ``done``; or the pod is gone
(404, or the watch saw it deleted before a follower began), then ``done`` with a
note if the end was never seen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from enum import Enum
from typing import Any

import urllib3

from shared import kube, metrics
from shared.errors import KubeError, KubeNotFound, StoreError
from shared.runlogs import store as log_store
from shared.runlogs.lines import Cursor, Deduper, timestamp_of
from shared.runlogs.store import LogStore
from shared.settings import LogSettings
from workers import supervisor
from workers.collector import recovery
from workers.collector.target import CONTAINER, Target

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 30.0
_EOF_PAUSE_S = 1.0  # a follow stream ended but the watch has not said the container ended yet
# Of a line being cut, the last bytes are kept: an end line glued to the output's last
# line (one with no newline) is there. It is well under this (its directory is a path).
_END_TAIL = 8 * 1024
GONE_NOTE = "the pod was deleted before its output was read"


class _Outcome(Enum):
    EOF = "eof"  # the stream reached the end of the output the kubelet had
    CUT = "cut"  # the collector cut a follow stream after the container ended
    QUIET = "quiet"  # a follow brought nothing for follow_quiet_s: open it again
    GONE = "gone"  # the pod does not exist
    MOVED = "moved"  # the stored cursor moved under us: read it again
    LOST = "lost"  # the collector lease went to another process
    ERROR = "error"  # the apiserver, kubelet or Redis failed: back off and read again
    STOPPED = "stopped"


class Follower:
    """Copies one attempt's output until it is complete (or the collector stops)."""

    def __init__(
        self,
        target: Target,
        *,
        logs: LogStore,
        settings: LogSettings,
        holder: str,
        gone: bool = False,
        printed: int | None = None,
    ) -> None:
        self.target = target
        self.printed = printed
        """Lines the container printed, by its own count (``workers/supervisor.py``):
        what the stored lines are checked against when the output is complete."""
        self.gone = gone
        """The watch saw the pod deleted before this follower began: there is nothing to
        read (the apiserver answers 404, or a newer pod of the same name's output)."""
        self.logs = logs
        self.settings = settings
        self.holder = holder
        self.ended = threading.Event()
        """Set from the pod watch once the container has terminated."""
        self.stop = threading.Event()
        self.finished = threading.Event()
        self._batch_lock = threading.Lock()
        self._batch: _Batch | None = None
        self._resp: Any = None
        self._following = False
        self._cut = False
        self._last_data = 0.0
        """When the current stream last delivered bytes (monotonic)."""
        self._quiet_s = settings.follow_quiet_s
        """How long the next follow waits for bytes: doubled after each quiet spell of a
        running container, back to ``follow_quiet_s`` once bytes come."""
        self._awaiting_headers = False
        """A follow is open and its answer has not begun (a silent container's)."""
        self._released: supervisor.OutputEnd | None = None
        """The end line this follower recovered for and let the container go at: PID 1
        says it again while it holds on, and a repeat is only passed."""
        self._thread = threading.Thread(
            target=self._run, name=f"logs-{target.pod}-{target.attempt}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def container_ended(self, printed: int | None = None) -> None:
        """The watch saw the container terminate (``printed``: the lines it counted): a
        follow stream that does not end by itself (KWOK's never do) is cut once quiet for
        ``drain_s`` (:meth:`_cut_follow`) and the rest read plainly."""
        if printed is not None:
            self.printed = printed  # before ``ended``: the follower finishes only after it
        if self.ended.is_set():
            return
        self.ended.set()
        self._arm_cut(self.settings.drain_s)

    def awaiting_headers(self) -> bool:
        """Whether this follower waits in a follow whose answer has not begun: such a
        request cannot be cut, and (on KWOK) outlives the container until its wait ends."""
        return self._awaiting_headers

    def halt(self) -> None:
        self.stop.set()
        self._cut_stream()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def flush_if_due(self) -> None:
        """Called by the collector's flusher: store lines waiting longer than the interval."""
        with self._batch_lock:
            batch = self._batch
            if batch is not None and batch.due(self.settings.flush_interval_s):
                batch.flush()

    def _run(self) -> None:
        backoff = _BACKOFF_INITIAL_S
        try:
            while not self.stop.is_set() and not self._register():
                self.stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            if self.gone and not self.stop.is_set():
                self._finish(GONE_NOTE)  # kept only if the output was not complete already
                return
            while not self.stop.is_set():
                outcome, saw_end = self._read_once()
                if outcome in (_Outcome.LOST, _Outcome.STOPPED):
                    return
                if outcome == _Outcome.GONE:
                    note = "" if saw_end else GONE_NOTE
                    self._finish(note)
                    return
                if outcome == _Outcome.EOF and self.ended.is_set() and saw_end:
                    self._finish("")
                    return
                if outcome == _Outcome.ERROR:
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                backoff = _BACKOFF_INITIAL_S
                if outcome == _Outcome.QUIET:
                    # A long silent job would otherwise cost a request every quiet spell
                    # for as long as it runs (1,000 of them: 50 a second).
                    self._quiet_s = min(self._quiet_s * 2, self._longest_quiet_s())
                if outcome == _Outcome.EOF:
                    self.ended.wait(_EOF_PAUSE_S)  # the container likely ended; the watch says soon
        finally:
            self.finished.set()

    def _register(self) -> bool:
        t = self.target
        try:
            self.logs.register_attempt(t.job_id, t.attempt, t.uid)
        except StoreError as e:
            log.warning("log store unreachable for %s: %s", t.pod, e)
            return False
        return True

    def _read_once(self) -> tuple[_Outcome, bool]:
        """One read from the stored cursor; the flag says whether it was a plain read of
        an ended container that reached the end (so its output is complete)."""
        t = self.target
        try:
            meta = self.logs.meta(t.job_id, t.attempt)
        except StoreError as e:
            log.warning("log store unreachable for %s: %s", t.pod, e)
            return _Outcome.ERROR, False
        if meta.done:
            return _Outcome.STOPPED, True
        plain = self.ended.is_set()
        self._cut = False
        since = _since_seconds(meta.cursor, self.settings.resume_margin_s)
        if since is not None:
            log.info(
                "reading the output of %s attempt %d again from %s (%d s back)",
                t.pod,
                t.attempt,
                meta.cursor,
                since,
            )
        try:
            resp = self._open(since, plain=plain)
        except KubeNotFound:
            return _Outcome.GONE, False
        except KubeError as e:
            if not plain and isinstance(e.__cause__, urllib3.exceptions.ReadTimeoutError):
                return _Outcome.QUIET, False  # nothing printed yet: no headers came
            log.info("cannot read the output of %s yet: %s", t.pod, e)
            return _Outcome.ERROR, False
        batch = _Batch(self, meta.cursor)
        with self._batch_lock:
            self._batch = batch
        self._resp, self._following = resp, not plain
        self._last_data = time.monotonic()
        if self.stop.is_set():  # halted before the stream existed to be cut
            kube.let_go(resp, read_whole=False)
            return _Outcome.STOPPED, False
        if not plain and self.ended.is_set():
            # The container ended while this follow was being opened: the cut the watch
            # asked for found no stream yet, and a stream that never ends (KWOK's) would
            # then be held until its read timeout. Give it the same drain from now.
            self._arm_cut(self.settings.drain_s)
        outcome = _Outcome.ERROR
        try:
            outcome = self._consume(resp, batch, plain=plain)
        finally:
            with self._batch_lock:
                self._batch = None
            self._resp, self._following = None, False
            kube.let_go(resp, read_whole=outcome == _Outcome.EOF)
        return outcome, plain and outcome == _Outcome.EOF

    def _longest_quiet_s(self) -> float:
        return max(self.settings.follow_quiet_s, self.settings.read_timeout_s)

    def _open(self, since: int | None, *, plain: bool) -> Any:
        t = self.target
        if not plain:
            self._awaiting_headers = True
            try:
                return t.kube.follow_log(
                    t.pod,
                    t.namespace,
                    container=CONTAINER,
                    since_seconds=since,
                    quiet_s=self._quiet_s,
                )
            finally:
                self._awaiting_headers = False
        return t.kube.call(
            t.kube.core.read_namespaced_pod_log,
            t.pod,
            t.namespace,
            container=CONTAINER,
            timestamps=True,
            since_seconds=since,
            _preload_content=False,
            _request_timeout=(t.kube.timeout, self.settings.read_timeout_s),
        )

    def _consume(self, resp: Any, batch: _Batch, *, plain: bool) -> _Outcome:
        dedupe = Deduper(batch.stored)
        pending = bytearray()
        cutting = 0  # bytes of an over-long line being skipped
        cut_ts = b""  # the cut line's timestamp
        tail = bytearray()  # the cut line's last _END_TAIL bytes
        max_line = self.settings.max_line_bytes
        try:
            for chunk in resp.stream(_READ_CHUNK, decode_content=True):
                self._last_data = time.monotonic()
                self._quiet_s = self.settings.follow_quiet_s
                pending += chunk
                while True:
                    nl = pending.find(b"\n")
                    if nl < 0:
                        if len(pending) > max_line and not cutting:
                            cutting = len(pending) - max_line
                            cut_ts = timestamp_of(bytes(pending[:64]))
                            tail[:] = pending[-_END_TAIL:]
                            line = recovery.cut(bytes(pending), max_line)
                            del pending[:]
                            self._keep(dedupe, batch, line, cut=True)
                        elif cutting:
                            cutting += len(pending)
                            tail += pending
                            del tail[:-_END_TAIL]
                            del pending[:]
                        break
                    if cutting:
                        cutting = 0
                        rest = bytes(tail + pending[: nl + 1])
                        tail.clear()
                        del pending[: nl + 1]
                        dedupe.end_cut()
                        end = supervisor.output_end(rest, self.target.uid)
                        if end is None:
                            self._keep_cursor(dedupe, batch)
                        elif (stop := self._cut_end(dedupe, batch, rest, cut_ts, *end)) is not None:
                            return stop
                        continue
                    line = bytes(pending[: nl + 1])
                    del pending[: nl + 1]
                    end = supervisor.output_end(line, self.target.uid)
                    if end is None:
                        self._keep(dedupe, batch, line)
                    elif (stop := self._glued_end(dedupe, batch, line, *end)) is not None:
                        return stop
                if batch.failed is not None:
                    return batch.failed
                if self.stop.is_set():
                    return _Outcome.STOPPED
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if self.stop.is_set():
                return _Outcome.STOPPED
            if not plain and isinstance(e, urllib3.exceptions.ReadTimeoutError):
                with self._batch_lock:  # quiet for follow_quiet_s: keep what came
                    batch.flush()
                return batch.failed or _Outcome.QUIET
            if not self._cut:
                log.info("output stream of %s broke: %s", self.target.pod, e)
                return _Outcome.ERROR
        if self._cut:
            with self._batch_lock:
                batch.flush()
            return batch.failed or _Outcome.CUT
        if pending and plain and not cutting:
            self._keep(dedupe, batch, bytes(pending) + b"\n", unended=True)  # no newline
        with self._batch_lock:
            batch.flush()
        return batch.failed or _Outcome.EOF

    def _glued_end(
        self,
        dedupe: Deduper,
        batch: _Batch,
        line: bytes,
        glued: bytes,
        end: supervisor.OutputEnd,
    ) -> _Outcome | None:
        """The container's end line, after the output's last line if that had no newline
        (``glued``: the log API joined the two)."""
        # The end line follows a cut line whose end no read has seen: that line, stored
        # cut, is the output's last (``glued``, if any, its rest, a rotation having
        # taken its middle; else a rotation took its rest with the first end line).
        cut_tail = dedupe.cursor.cut
        # Not when this follower has handled this end line: meeting it again (its last
        # read after the follow), what is glued to it is the output's last line, stored
        # then, or (a rotation having torn it) that line's rest, stamped later, which the
        # cursor would take for a new line.
        if glued and end != self._released:
            self._keep(dedupe, batch, glued + b"\n", unended=True)
        elif cut_tail:
            dedupe.end_cut()
        return self._at_end(
            dedupe, batch, line[len(glued) :], end, line_ts=timestamp_of(glued), cut_tail=cut_tail
        )

    def _cut_end(
        self,
        dedupe: Deduper,
        batch: _Batch,
        rest: bytes,
        cut_ts: bytes,
        glued: bytes,
        end: supervisor.OutputEnd,
    ) -> _Outcome | None:
        """The container's end line, glued to the output's last line, which had no
        newline and was cut at ``max_line_bytes`` (``rest`` is that line's last bytes)."""
        return self._at_end(dedupe, batch, rest[len(glued) :], end, line_ts=cut_ts, cut_tail=True)

    def _at_end(
        self,
        dedupe: Deduper,
        batch: _Batch,
        own: bytes,
        end: supervisor.OutputEnd,
        *,
        line_ts: bytes,
        cut_tail: bool,
    ) -> _Outcome | None:
        """The container's end line ``own``: store what came before it, recover what the
        kubelet never served (the container holds on until then), and pass the line
        itself. Met again on a re-read (the cursor is past it), it is only passed.
        ``cut_tail``: the output's last line had no newline and is stored cut, not
        marked unended yet (it is, with the cursor past the end line)."""
        with self._batch_lock:
            batch.flush()
        if batch.failed is not None:
            return batch.failed
        if not timestamp_of(own):
            # Printed right after the output's unended last line, the end line is the
            # rest of that line's record, with no time of its own: it takes the line's
            # (for the cursor, and for the lines recovered after the last stored one).
            own = line_ts + own
        if not dedupe.keep(own):
            return None
        if end == self._released:  # a repeat, or a re-read after the cursor's move failed
            self._keep_cursor(dedupe, batch, unended=cut_tail)
            return None
        # The store's cursor stays before the end line until the recovery is done: a
        # collector killed in it, or a store that failed, meets the line again.
        recovered = recovery.recover(
            self.target,
            self.logs,
            end,
            holder=self.holder,
            max_line=self.settings.max_line_bytes,
            end_ts=timestamp_of(own),
            cut_tail=cut_tail,
        )
        if recovered is None:
            return _Outcome.ERROR
        self._released = end
        self._keep_cursor(dedupe, batch, unended=cut_tail)
        with self._batch_lock:
            batch.flush()
        return batch.failed

    def _keep(
        self,
        dedupe: Deduper,
        batch: _Batch,
        line: bytes,
        *,
        cut: bool = False,
        unended: bool = False,
    ) -> None:
        max_line = self.settings.max_line_bytes
        if not cut and len(line) > max_line + 1:
            # A whole line that came in the chunk that took it past the limit: cut as
            # one read across chunks is (and as recovery cuts a line it puts back).
            line = recovery.cut(line, max_line)
        if dedupe.keep(line, cut=cut):
            with self._batch_lock:
                batch.add(
                    line, dedupe.cursor, chunk_bytes=self.settings.chunk_bytes, unended=unended
                )
        else:
            self._keep_cursor(dedupe, batch)  # a dropped rest of a cut line ends it

    def _keep_cursor(self, dedupe: Deduper, batch: _Batch, *, unended: bool = False) -> None:
        """Store a cursor that moved without a line (a cut line's end was read), so a
        re-read does not take the next line for that line's rest; ``unended``: a stored
        line turned out to have had no newline (it is counted with the move, once)."""
        if dedupe.cursor != batch.after or unended:
            with self._batch_lock:
                batch.move(dedupe.cursor, unended=unended)

    def _arm_cut(self, delay_s: float) -> None:
        timer = threading.Timer(delay_s, self._cut_follow)
        timer.daemon = True
        timer.start()

    def _cut_follow(self) -> None:
        """Cut the follow once nothing came for ``drain_s``. A follow still delivering is
        catching up on output the container printed before it ended, and the kubelet
        serves a plain read from its current log file only: cut while behind a
        rotation, that output would be lost (seen with 10 MiB printed in 20 s)."""
        if not self._following:
            return
        quiet = time.monotonic() - self._last_data
        if quiet < self.settings.drain_s:
            self._arm_cut(self.settings.drain_s - quiet)
            return
        self._cut_stream()

    def _cut_stream(self) -> None:
        resp = self._resp
        if resp is None or self.finished.is_set():
            return
        self._cut = True
        with contextlib.suppress(OSError, AttributeError):  # already closed
            resp.shutdown()

    def _finish(self, note: str) -> None:
        t = self.target
        try:
            if self.logs.finish(
                t.job_id, t.attempt, holder=self.holder, note=note, printed=self.printed
            ):
                log.info("output of %s attempt %d complete", t.pod, t.attempt)
                if self.printed is not None:
                    self._count_missing()
        except StoreError as e:
            # Not marked done: the next collector pass (or leader) reads it again from the
            # cursor, finds nothing new and marks it then.
            log.warning("cannot mark the output of %s complete: %s", t.pod, e)

    def _count_missing(self) -> None:
        """Count and log the lines the container printed that the store never got."""
        t = self.target
        missing = self.logs.meta(t.job_id, t.attempt).missing
        if missing:
            metrics.LOG_LINES_MISSING.inc(missing)
            log.warning(
                "%d of the %d lines %s attempt %d printed were never served by the kubelet",
                missing,
                self.printed,
                t.pod,
                t.attempt,
            )


class _Batch:
    """Lines read but not stored yet, and the stored cursor they continue from."""

    def __init__(self, follower: Follower, stored: Cursor) -> None:
        self.follower = follower
        self.stored = stored
        self.after = stored
        self.lines: list[bytes] = []
        self.unended = 0
        """Of ``lines``, those whose newline the collector added (see ``AttemptMeta``)."""
        self.size = 0
        self.first_at = 0.0
        self.failed: _Outcome | None = None
        self.moved = False
        """The cursor moved with no line to add (see :meth:`move`)."""

    def add(self, line: bytes, after: Cursor, *, chunk_bytes: int, unended: bool = False) -> None:
        if self.failed is not None:
            return
        if not self.lines:
            self.first_at = time.monotonic()
        self.lines.append(line)
        self.unended += unended
        self.size += len(line)
        self.after = after
        if self.size >= chunk_bytes:
            self.flush()

    def move(self, after: Cursor, *, unended: bool = False) -> None:
        if self.failed is not None:
            return
        if not self.lines and not self.moved:
            self.first_at = time.monotonic()
        self.after, self.moved = after, True
        self.unended += unended

    def due(self, interval_s: float) -> bool:
        waiting = bool(self.lines) or self.moved
        return waiting and time.monotonic() - self.first_at >= interval_s

    def flush(self) -> None:
        """Store the waiting lines (the caller holds the follower's batch lock)."""
        if not (self.lines or self.moved) or self.failed is not None:
            return
        f, t = self.follower, self.follower.target
        try:
            result = f.logs.append(
                t.job_id,
                t.attempt,
                b"".join(self.lines),
                lines=len(self.lines),
                unended=self.unended,
                before=self.stored,
                after=self.after,
                holder=f.holder,
            )
        except StoreError as e:
            log.warning("log store unreachable, reading %s again later: %s", t.pod, e)
            self.failed = _Outcome.ERROR
            return
        if result == log_store.APPENDED:
            self.stored = self.after
            self.lines, self.unended, self.size, self.moved = [], 0, 0, False
        elif result == log_store.LOST_LEASE:
            self.failed = _Outcome.LOST
        elif result == log_store.FINISHED:
            self.failed = _Outcome.STOPPED
        else:
            self.failed = _Outcome.MOVED


def _since_seconds(cursor: Cursor, margin_s: int) -> int | None:
    if cursor.ts_ns == 0:
        return None
    return max(1, math.ceil(time.time() - cursor.ts_ns / 1e9) + margin_s)
