"""Serving a job's output from the log store.

The collector (``workers/collector``) copies every container's output into
the store as it is printed, so this module never reads a pod: what has ended
and what still runs come from one place, and a follower (``follow``) reads the
stored lines and then waits on the same stream for new ones. No gap and no
duplicate at the joint, and the output outlives the pod, its node and the
kubelet's rotation. Lines the kubelet never served are put back from the
container's own copy when it could keep one (``workers/collector/recovery.py``);
otherwise, when the container counted its output, the reader's last line says how
many are missing.
Each pod of a job is an *attempt* (a ``retry`` makes a new
one); readers number the attempts that have output 1, 2, ... and get the last
unless they ask.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from shared.errors import ConfigError, NotFoundError
from shared.runlogs.lines import LineTimes, parse_since, strip_timestamp
from shared.runlogs.store import Entry, LogStore
from shared.state.records import Job, Run
from shared.state.store import Store

_PAGE = 200  # stream entries per Redis read; an entry holds up to logs.chunk_bytes
_BLOCK_MS = 1000  # how long one wait for new lines blocks a follower's Redis connection
_POLL_S = 0.5  # how often a follower checks for a first (or next) attempt
_FINISHED_GRACE_S = 10.0
"""After its job ended, a follower waits this long for the collector to mark the output
complete (it cuts a stream ``logs.drain_s`` after the end, then stores the rest)."""


@dataclass(frozen=True)
class LogRequest:
    job_num: int = 0
    replica_num: int = 0
    attempt: int | None = None
    """1-based among the attempts with output; None for the last."""
    follow: bool = False
    since_ns: int | None = None
    tail: int | None = None
    timestamps: bool = False


@dataclass(frozen=True)
class LogAnswer:
    attempts: int
    """Attempts of the job that have output (so far)."""
    attempt: int
    """The one served (1-based; 0 when there is none yet)."""
    body: Iterator[bytes]


def since_ns(since: str | None) -> int | None:
    """The ``since`` query (a duration back from now, or a time) in ns; ConfigError if bad."""
    if since is None:
        return None
    try:
        return parse_since(since, now=time.time())
    except ValueError as e:
        raise ConfigError(str(e), field="since") from e


def job_logs(store: Store, logs: LogStore, run: Run, request: LogRequest) -> LogAnswer:
    """The output of one job of ``run``; NotFoundError names a missing job or attempt."""
    job = _find_job(store, run, request.job_num, request.replica_num)
    labels = sorted(logs.attempts(job.id))
    if request.attempt is not None and not 1 <= request.attempt <= len(labels):
        have = f"{len(labels)} attempt{'s' if len(labels) != 1 else ''} with output"
        raise NotFoundError(
            f"job {job.job_num} of {run.name!r} has {have}; --attempt {request.attempt}"
            " is not one of them",
            field="attempt",
        )
    index = request.attempt if request.attempt is not None else len(labels)
    body = _serve(store, logs, job, labels, index, request)
    return LogAnswer(attempts=len(labels), attempt=index, body=body)


def _serve(
    store: Store, logs: LogStore, job: Job, labels: list[int], index: int, request: LogRequest
) -> Iterator[bytes]:
    fmt = _Format(since_ns=request.since_ns, timestamps=request.timestamps)
    if not request.follow:
        if index:
            served = labels[index - 1]
            recovered = logs.meta(job.id, served).recovered
            yield from _stored_with_last(logs, job.id, served, request.tail, fmt)
            yield from _missing_note(logs, job.id, served, recovered_before=recovered)
        return
    label = labels[index - 1] if index else None
    pinned = request.attempt is not None
    while True:
        if label is None:
            label = _wait_for_attempt(store, logs, job, after=0)
            if label is None:
                return
        recovered = logs.meta(job.id, label).recovered
        last = yield from _stored_with_last(logs, job.id, label, request.tail, fmt)
        yield from _live(store, logs, job, label, last, fmt)
        yield from _missing_note(logs, job.id, label, recovered_before=recovered)
        if pinned:
            return
        following = _wait_for_attempt(store, logs, job, after=label)
        if following is None:
            return
        yield f"[berth] job {job.job_num} was retried: attempt {following}\n".encode()
        label, request = following, LogRequest(timestamps=request.timestamps)


def _stored_with_last(
    logs: LogStore, job_id: str, label: int, tail: int | None, fmt: _Format
) -> Generator[bytes, None, str]:
    """What is stored now; returns (as the generator's value) the last entry id read."""
    meta = logs.meta(job_id, label)
    if meta.dropped:
        cap = logs.cap_bytes / (1024 * 1024)
        yield f"[berth] {meta.dropped} earlier lines dropped (cap {cap:g} MiB)\n".encode()
    if tail is not None:
        entries, last = _tail_entries(logs, job_id, label, tail)
        lines = [line for e in entries for line in e.data.splitlines(keepends=True)]
        chosen = fmt.apply(b"".join(lines)).splitlines(keepends=True)[-tail:] if tail else []
        if chosen:
            yield b"".join(chosen)
        return last
    after = "-"
    while True:
        page = logs.entries(job_id, label, after=after, count=_PAGE)
        if not page:
            return after
        for entry in page:
            out = fmt.apply(entry.data)
            if out:
                yield out
        after = page[-1].id


def _missing_note(
    logs: LogStore, job_id: str, label: int, *, recovered_before: int
) -> Iterator[bytes]:
    """A last line saying how many printed lines the store never got, if any: the
    container counted its output (workers/supervisor.py), the collector compared. Or,
    when the collector put missing lines back in place while this reader was reading
    (``recovered_before`` is what it had put back when the reader began), that some came
    before where this reader was: a new read has them."""
    meta = logs.meta(job_id, label)
    if meta.recovered > recovered_before:
        yield (
            f"[berth] {meta.recovered - recovered_before:,} lines the kubelet never served"
            " were put back from the container's copy while this was read; some may be"
            " above: read the logs again for the whole output in order\n"
        ).encode()
    if meta.done and meta.missing and meta.printed is not None:
        why = meta.note or "the kubelet's log API never served them (its log rotation)"
        yield (
            f"[berth] {meta.missing:,} of the {meta.printed:,} lines this job printed are"
            f" missing: {why}\n"
        ).encode()


def _tail_entries(logs: LogStore, job_id: str, label: int, tail: int) -> tuple[list[Entry], str]:
    """The newest entries holding at least ``tail`` lines, oldest first, and the newest id."""
    found: list[Entry] = []
    lines = 0
    before = "+"
    while lines < tail:
        page = logs.last_entries(job_id, label, before=before, count=_PAGE)
        if not page:
            break
        for entry in page:
            found.append(entry)
            lines += entry.data.count(b"\n")
            if lines >= tail:
                break
        before = page[-1].id
    newest = found[0].id if found else "-"
    if not found:  # nothing stored, or tail 0: follow from the current end
        head = logs.last_entries(job_id, label, before="+", count=1)
        newest = head[0].id if head else "-"
    return list(reversed(found)), newest


def _live(
    store: Store, logs: LogStore, job: Job, label: int, after: str, fmt: _Format
) -> Iterator[bytes]:
    """New lines as the collector stores them, until the attempt is complete."""
    ended_at: float | None = None
    while True:
        entries = logs.wait(job.id, label, after=after, block_ms=_BLOCK_MS)
        for entry in entries:
            out = fmt.apply(entry.data)
            if out:
                yield out
            after = entry.id
        if entries:
            continue
        if logs.meta(job.id, label).done:
            # Marked done after its last append: one more read cannot miss anything.
            rest = logs.entries(job.id, label, after=after, count=_PAGE)
            if not rest:
                return
            continue
        current = store.find_job(job.id)
        if current is None or current.attempt != label or current.status.is_finished:
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > _FINISHED_GRACE_S:
                return


def _wait_for_attempt(store: Store, logs: LogStore, job: Job, *, after: int) -> int | None:
    """The first attempt with output numbered above ``after``; None once the job ended
    without one (after the grace the collector needs to register it)."""
    ended_at: float | None = None
    while True:
        newer = [a for a in logs.attempts(job.id) if a > after]
        if newer:
            return min(newer)
        current = store.find_job(job.id)
        if current is None:
            return None
        if current.status.is_finished:
            if after and current.attempt <= after:
                return None  # the attempt just read was its last
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > _FINISHED_GRACE_S:
                return None
        time.sleep(_POLL_S)


@dataclass
class _Format:
    """A reader's view of stored raw lines: since a time, with or without timestamps."""

    since_ns: int | None
    timestamps: bool

    def __post_init__(self) -> None:
        self._times = LineTimes()

    def apply(self, data: bytes) -> bytes:
        if self.since_ns is None and self.timestamps:
            return data
        kept = []
        for line in data.splitlines(keepends=True):
            if self.since_ns is not None:
                ts = self._times.ns(line)
                if ts is not None and ts < self.since_ns:
                    continue
            kept.append(line if self.timestamps else strip_timestamp(line))
        return b"".join(kept)


def _find_job(store: Store, run: Run, job_num: int, replica_num: int) -> Job:
    for job in store.jobs_of(run):
        if job.job_num == job_num and job.replica_num == replica_num:
            return job
    raise NotFoundError(
        f"run {run.name!r} has no job {job_num} in replica {replica_num}", field="job"
    )
