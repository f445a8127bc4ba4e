"""The change log of run and job records: which records were written, in order.

Every write of a run or job record (and every change to the active set) also
takes the next number of ``changes-seq`` and files the record's key under it in
the ``changes`` sorted set, in the same script or transaction as the write. A
reader that remembers the number it last saw asks for what was filed after it:
the scheduler's record cache (:mod:`shared.queueing.view`) reads a few hundred
changed records per pass instead of the versions of every active one.

A key is filed once, under its latest number (``ZADD`` moves it), so the log
holds at most one entry per record and readers trim it to ``MAX_ENTRIES``. A
reader behind what was trimmed (``changes-floor``), or whose log was reset (a
flushed or replaced database: ``changes-epoch`` is gone or another), reads
everything instead, as before the log.

Writers: :meth:`shared.state.store.Store` (compare-and-set, create, add jobs,
leave the active set, delete) and :mod:`shared.queueing.commit`. A writer that
bypassed them would leave a reader's record stale until its next full read
(``RecordCache`` reads in full every few minutes): no decision is lost, since
every record write is a compare-and-set on the record's version, only delayed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Key = Callable[..., str]
"""A store's key builder (``Store.key``): every name below is the store's, with its prefix."""

MAX_ENTRIES = 50_000
"""Entries kept: one per record written since, so a reader falls behind only past
this many distinct records written between two of its reads."""

# A Lua function for scripts that write records: file ``member`` under the next number.
NOTE_LUA = """
local function note(seq, log, member)
  redis.call('ZADD', log, redis.call('INCR', seq), member)
end
"""
# KEYS: seq, log, then the record keys to file (written in the same transaction).
_NOTE = NOTE_LUA + "for i = 3, #KEYS do note(KEYS[1], KEYS[2], KEYS[i]) end\nreturn 1"
# KEYS: active set, seq, log, run key; ARGV: run id. A finished run leaves the active set.
_LEAVE = (
    NOTE_LUA
    + """
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then note(KEYS[2], KEYS[3], KEYS[4]) end
return 1
"""
)


def log_keys(key: Key) -> list[str]:
    """The sequence counter and the log, which every writer names."""
    return [key("changes-seq"), key("changes")]


def reader_keys(key: Key) -> list[str]:
    """The highest number trimmed (``changes-floor``) and the log's epoch, which readers keep."""
    return [key("changes-floor"), key("changes-epoch")]


def note_in(pipe: Any, key: Key, record_keys: list[str]) -> None:
    """File ``record_keys`` as changed, inside the transaction ``pipe`` that writes them."""
    if record_keys:
        pipe.eval(_NOTE, 2 + len(record_keys), *log_keys(key), *record_keys)


def leave_active(client: Any, key: Key, run_id: str) -> None:
    """Take ``run_id`` out of the active set, filing its record as changed."""
    client.eval(_LEAVE, 4, key("active"), *log_keys(key), key("run", run_id), run_id)
