"""The log store on a real Redis: fenced appends, the cap, and what readers are served.

The collector's appends are exactly once (a lease fence and a cursor check in one
script); readers get stored lines and then new ones on the same stream, per
attempt, with --tail, --since and --timestamps.
"""

from __future__ import annotations

import threading
import time

import pytest

from api.services.logs import LogRequest, job_logs
from shared.errors import NotFoundError
from shared.runlogs import store as log_store
from shared.runlogs.lines import Cursor, Deduper
from shared.runlogs.store import LogStore
from shared.state.records import Event, Job, Run, RunStatus
from shared.state.store import Store
from workers.collector.recovery import merge

pytestmark = pytest.mark.integration

HOLDER = "collector-a"
BASE_NS = 1_796_000_000 * 10**9


@pytest.fixture
def logs(store: Store) -> LogStore:
    ls = LogStore(store, cap_bytes=1024 * 1024)
    store.r.set(ls.lease_key(), HOLDER)
    return ls


def _run(store: Store, status: RunStatus = RunStatus.RUNNING) -> tuple[Run, Job]:
    run = Run(
        id="run-1",
        project="main",
        name="train",
        user="alice",
        configuration={"type": "task"},
        configuration_type="task",
        status=status,
    )
    job = Job(id="job-1", run_id=run.id, project="main", run_name="train", status=status)
    run.job_ids = [job.id]
    store.create_run(run, [job], Event(at=0, kind="status", message="submitted"))
    return run, job


def _stamped(i: int, text: str | None = None) -> bytes:
    sec, frac = divmod(BASE_NS + i * 1_000_000, 10**9)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{stamp}.{frac:09d}Z {text or f'line {i}'}\n".encode()


def _append(logs: LogStore, attempt: int, lines: list[bytes]) -> int:
    before = logs.meta("job-1", attempt).cursor
    d = Deduper(before)
    kept = [line for line in lines if d.keep(line)]
    return logs.append(
        "job-1",
        attempt,
        b"".join(kept),
        lines=len(kept),
        before=before,
        after=d.cursor,
        holder=HOLDER,
    )


def _read(store: Store, logs: LogStore, run: Run, **kw: object) -> bytes:
    answer = job_logs(store, logs, run, LogRequest(**kw))  # type: ignore[arg-type]
    return b"".join(answer.body)


def test_a_collector_without_the_lease_or_with_a_stale_cursor_cannot_append(
    store: Store, logs: LogStore
) -> None:
    logs.register_attempt("job-1", 1, "uid-1")
    assert _append(logs, 1, [_stamped(0)]) == log_store.APPENDED
    stale = Cursor()
    assert (
        logs.append("job-1", 1, _stamped(1), lines=1, before=stale, after=stale, holder=HOLDER)
        == log_store.MOVED
    )
    store.r.set(logs.lease_key(), "collector-b")  # another collector took over
    assert _append(logs, 1, [_stamped(1)]) == log_store.LOST_LEASE
    store.r.set(logs.lease_key(), HOLDER)
    assert logs.finish("job-1", 1, holder=HOLDER)
    assert _append(logs, 1, [_stamped(2)]) == log_store.FINISHED
    assert logs.meta("job-1", 1).lines == 1
    # A later mark (the pod deleted after its output was read) does not rewrite why it ended.
    assert not logs.finish("job-1", 1, holder=HOLDER, note="the pod was deleted")
    assert logs.meta("job-1", 1).note == ""


def test_a_cut_line_is_kept_in_the_cursor_until_its_end_is_read_which_adds_no_entry(
    store: Store, logs: LogStore
) -> None:
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    head = _stamped(0, "a" * 100 + " [berth] line cut at 100 bytes")
    d = Deduper(Cursor())
    assert d.keep(head, cut=True)
    stored = d.cursor
    assert logs.append("job-1", 1, head, lines=1, before=Cursor(), after=stored, holder=HOLDER) == 1
    assert logs.meta("job-1", 1).cursor == Cursor(stored.ts_ns, 1, cut=True)
    d.end_cut()
    closed = logs.append("job-1", 1, b"", lines=0, before=stored, after=d.cursor, holder=HOLDER)
    assert closed == log_store.APPENDED
    meta = logs.meta("job-1", 1)
    assert meta.cursor == Cursor(stored.ts_ns, 1, cut=False)
    assert (meta.lines, len(logs.entries("job-1", 1, after="-", count=10))) == (1, 1)
    assert _read(store, logs, run) == head.split(b" ", 1)[1]


def test_past_the_cap_the_oldest_lines_go_and_readers_are_told_how_many(
    store: Store, logs: LogStore
) -> None:
    run, _ = _run(store)
    small = LogStore(store, cap_bytes=10_000)
    small.register_attempt("job-1", 1, "uid-1")
    for batch in range(10):
        assert _append(small, 1, [_stamped(batch * 50 + i) for i in range(50)]) == 1
    meta = small.meta("job-1", 1)
    assert meta.bytes <= 10_000
    assert meta.dropped > 0
    out = _read(store, small, run).decode().splitlines()
    assert out[0] == f"[berth] {meta.dropped} earlier lines dropped (cap 0.00953674 MiB)"
    assert out[1:] == [f"line {i}" for i in range(meta.dropped, 500)]


def test_readers_get_tail_since_timestamps_and_each_attempt(store: Store, logs: LogStore) -> None:
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    logs.register_attempt("job-1", 2, "uid-2")
    _append(logs, 1, [_stamped(i, f"first {i}") for i in range(5)])
    _append(logs, 2, [_stamped(100 + i) for i in range(1000)])

    assert _read(store, logs, run).decode().splitlines() == [f"line {100 + i}" for i in range(1000)]
    assert _read(store, logs, run, attempt=1).decode().splitlines() == [
        f"first {i}" for i in range(5)
    ]
    assert _read(store, logs, run, tail=3).decode().splitlines() == [
        "line 1097",
        "line 1098",
        "line 1099",
    ]
    assert _read(store, logs, run, tail=0) == b""
    since = BASE_NS + 1095 * 1_000_000
    assert _read(store, logs, run, since_ns=since).decode().splitlines() == [
        f"line {i}" for i in range(1095, 1100)
    ]
    stamped = _read(store, logs, run, tail=1, timestamps=True)
    assert stamped == _stamped(1099)
    with pytest.raises(NotFoundError, match="has 2 attempts with output"):
        _read(store, logs, run, attempt=3)


def test_two_followers_see_the_same_lines_live_and_end_when_the_output_is_complete(
    store: Store, logs: LogStore
) -> None:
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    _append(logs, 1, [_stamped(0)])
    seen: list[bytes] = [b"", b""]

    def follow(slot: int) -> None:
        answer = job_logs(store, logs, run, LogRequest(follow=True))
        seen[slot] = b"".join(answer.body)

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(2)]
    for t in followers:
        t.start()
    for batch in range(1, 6):
        _append(logs, 1, [_stamped(batch * 10 + i) for i in range(10)])
    job = store.get_job("job-1")
    job.status = RunStatus.DONE
    store.save_job(job)
    logs.finish("job-1", 1, holder=HOLDER)
    for t in followers:
        t.join(timeout=15)
        assert not t.is_alive(), "a follower did not end once the output was complete"
    expected = ["line 0"] + [f"line {b * 10 + i}" for b in range(1, 6) for i in range(10)]
    assert seen[0].decode().splitlines() == expected
    assert seen[1] == seen[0]


def test_readers_are_told_how_many_printed_lines_never_reached_the_store(
    store: Store, logs: LogStore
) -> None:
    """The container's own count against what was stored: the reader's last line says
    how many are missing, after the lines it asked for, followed or not."""
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    before = logs.meta("job-1", 1).cursor
    d = Deduper(before)
    lines = [_stamped(i) for i in range(5)]
    assert all(d.keep(line) for line in lines)
    stored = logs.append(
        "job-1",
        1,
        b"".join(lines),
        lines=5,
        before=before,
        after=d.cursor,
        holder=HOLDER,
        unended=1,
    )
    assert stored == log_store.APPENDED
    assert logs.finish("job-1", 1, holder=HOLDER, printed=7)
    meta = logs.meta("job-1", 1)
    assert (meta.lines, meta.unended, meta.printed, meta.missing) == (5, 1, 7, 3)
    note = (
        "[berth] 3 of the 7 lines this job printed are missing: the kubelet's log API"
        " never served them (its log rotation)"
    )
    expected = [f"line {i}" for i in range(5)] + [note]
    assert _read(store, logs, run).decode().splitlines() == expected
    assert _read(store, logs, run, tail=2).decode().splitlines() == expected[-3:]
    job = store.get_job("job-1")
    job.status = RunStatus.DONE
    store.save_job(job)
    assert _read(store, logs, run, follow=True).decode().splitlines() == expected


def test_a_complete_output_with_nothing_missing_or_uncounted_gets_no_note(
    store: Store, logs: LogStore
) -> None:
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    _append(logs, 1, [_stamped(i) for i in range(3)])
    assert logs.finish("job-1", 1, holder=HOLDER, printed=3)
    assert logs.meta("job-1", 1).printed == 3
    assert _read(store, logs, run).decode().splitlines() == ["line 0", "line 1", "line 2"]
    logs.register_attempt("job-1", 2, "uid-2")
    _append(logs, 2, [_stamped(9)])
    assert logs.finish(
        "job-1", 2, holder=HOLDER, note="the pod was deleted before its output was read"
    )
    assert logs.meta("job-1", 2).printed is None  # the container never said
    assert _read(store, logs, run).decode().splitlines() == ["line 9"]


def test_a_rewrite_puts_recovered_lines_in_place_under_the_streams_own_ids(
    store: Store, logs: LogStore
) -> None:
    """Lines 2 and 5 never came; the collector's rewrite puts them back: a reader that
    had read the first entry goes on with no line twice, a new one reads all in order."""
    run, _ = _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    _append(logs, 1, [_stamped(i) for i in (0, 1)])
    _append(logs, 1, [_stamped(i) for i in (3, 4)])
    entries = logs.entries("job-1", 1, after="-", count=10)
    first, second = (e.id for e in entries)
    merged = merge(
        entries,
        b"".join(f"line {i}\n".encode() for i in range(6)),
        max_line=1024,
        fallback_ts=_stamped(9, "x")[:-2],
    )
    assert merged is not None and merged.recovered == 2
    meta = logs.meta("job-1", 1)
    result = logs.rewrite(
        "job-1",
        1,
        merged.entries,
        recovered=2,
        cursor=meta.cursor,
        last_id=second,
        holder=HOLDER,
    )
    assert result == log_store.APPENDED
    after = logs.meta("job-1", 1)
    assert (after.lines, after.recovered, after.cursor) == (6, 2, meta.cursor)
    assert [e.id for e in logs.entries("job-1", 1, after="-", count=10)] == [first, second]
    assert [
        line.split(b" ", 1)[1]
        for e in logs.entries("job-1", 1, after=first, count=10)
        for line in e.data.splitlines()
    ] == [b"line 2", b"line 3", b"line 4", b"line 5"]
    assert logs.finish("job-1", 1, holder=HOLDER, printed=6)
    assert logs.meta("job-1", 1).missing == 0
    assert _read(store, logs, run).decode().splitlines() == [f"line {i}" for i in range(6)]
    assert not store.r.exists(logs._stream_key("job-1", 1) + ":rewrite")
    assert store.r.ttl(logs._stream_key("job-1", 1)) == -1  # the aside key's expiry did not follow


def test_a_recovered_last_line_without_a_newline_is_counted_as_the_collector_ended_it(
    store: Store, logs: LogStore
) -> None:
    """The kubelet served the end line without the unended last line before it: the
    rewrite puts it back and counts it unended, so the container's count (newlines)
    finds nothing missing."""
    _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    _append(logs, 1, [_stamped(i) for i in (0, 1)])
    entries = logs.entries("job-1", 1, after="-", count=10)
    kept = b"".join(f"line {i}\n".encode() for i in range(4)) + b"the tail"
    merged = merge(entries, kept, max_line=1024, fallback_ts=_stamped(9, "x")[:-2])
    assert merged is not None and (merged.recovered, merged.unended) == (3, 1)
    meta = logs.meta("job-1", 1)
    result = logs.rewrite(
        "job-1",
        1,
        merged.entries,
        recovered=merged.recovered,
        unended=merged.unended,
        cursor=meta.cursor,
        last_id=entries[-1].id,
        holder=HOLDER,
    )
    assert result == log_store.APPENDED
    after = logs.meta("job-1", 1)
    assert (after.lines, after.unended, after.recovered) == (5, 1, 3)
    assert logs.finish("job-1", 1, holder=HOLDER, printed=4)
    assert logs.meta("job-1", 1).missing == 0


def test_a_rewrite_is_refused_after_an_append_without_the_lease_or_once_done(
    store: Store, logs: LogStore
) -> None:
    _run(store)
    logs.register_attempt("job-1", 1, "uid-1")
    _append(logs, 1, [_stamped(0)])
    [entry] = logs.entries("job-1", 1, after="-", count=10)
    stale = logs.meta("job-1", 1).cursor
    new = [(entry.id, entry.data + _stamped(1), 2)]

    def rewrite(cursor: Cursor, last_id: str, holder: str = HOLDER) -> int:
        return logs.rewrite(
            "job-1", 1, new, recovered=1, cursor=cursor, last_id=last_id, holder=holder
        )

    assert rewrite(stale, entry.id, holder="collector-b") == log_store.LOST_LEASE
    _append(logs, 1, [_stamped(2)])  # an append since the stream was read
    assert rewrite(stale, entry.id) == log_store.MOVED
    assert rewrite(logs.meta("job-1", 1).cursor, entry.id) == log_store.MOVED  # not last
    assert logs.meta("job-1", 1).lines == 2
    assert logs.finish("job-1", 1, holder=HOLDER)
    last = logs.entries("job-1", 1, after=entry.id, count=10)[-1].id
    assert rewrite(logs.meta("job-1", 1).cursor, last) == log_store.FINISHED
    assert logs.meta("job-1", 1).recovered == 0
    # A refused rewrite leaves no copy aside (up to the cap, for each refusal).
    assert not store.r.exists(logs._stream_key("job-1", 1) + ":rewrite")
