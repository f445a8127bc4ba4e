"""Writing a run and all its jobs at once, fenced by the capacity version.

One script call checks every record's version (as :meth:`Store.save_run` does
for one record, in the same ``{v, d}`` layout), writes them all with their
events, and keeps the active set and the queue's notes in step. A gang's jobs
therefore become placed together or not at all, and no reader ever sees half
of a decision.

**The fence.** Every placement also checks and increments
``queue:capacity-version``. A pass reads the version *before* it reads any job,
so its view of what is taken includes every placement made before that read;
a placement made by anybody after it moves the version, and the pass's own
placements are then refused (:data:`FENCED`). Two passes that overlap, because
the lock expired under a stalled pass or because a test runs passes side by
side, can therefore never promise the same GPU twice: the loser re-reads and
plans again. Releasing capacity (a job finishing) needs no fence: a stale view
only sees less free capacity than there is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared.queueing import keys
from shared.state import changes
from shared.state.records import Event, Job, Run
from shared.state.store import Store

OK, CONFLICT, FENCED = 1, 0, -1

# One change. K: capacity version, events, active set, admitted, attempts, cleanup, the
# change log's counter and log (shared.state.changes), then n records. A: fence ('' =
# none), run id, finished ('1' = leave the active set), admitted at ('' = keep, '-' =
# forget), attempts increment, cleanup at ('' = keep, '-' = clear), n, then (expected v,
# new v, data) per record, then events.
_WRITE_ONE = (
    changes.NOTE_LUA
    + """
local function write_one(K, A)
  local n = tonumber(A[7])
  if A[1] ~= '' then
    local cur = redis.call('GET', K[1]) or '0'
    if cur ~= A[1] then return -1 end
  end
  for i = 1, n do
    local cur = redis.call('HGET', K[8 + i], 'v')
    if (cur or '-1') ~= A[7 + (i - 1) * 3 + 1] then return 0 end
  end
  for i = 1, n do
    local b = 7 + (i - 1) * 3
    redis.call('HSET', K[8 + i], 'v', A[b + 2], 'd', A[b + 3])
    note(K[7], K[8], K[8 + i])
  end
  for j = 8 + n * 3, #A do
    redis.call('XADD', K[2], 'MAXLEN', '~', '10000', '*', 'e', A[j])
  end
  if A[3] == '1' then redis.call('SREM', K[3], A[2]) end
  if A[4] == '-' then redis.call('HDEL', K[4], A[2])
  elseif A[4] ~= '' then redis.call('HSET', K[4], A[2], A[4]) end
  if A[5] ~= '0' then redis.call('HINCRBY', K[5], A[2], A[5]) end
  if A[6] == '-' then redis.call('HDEL', K[6], A[2])
  elseif A[6] ~= '' then redis.call('HSET', K[6], A[2], A[6]) end
  if A[1] ~= '' then return redis.call('INCR', K[1]) end
  return 1
end
"""
)
_WRITE = _WRITE_ONE + "return write_one(KEYS, ARGV)"
# Several fenced changes in turn, in one script run (nothing comes between them): ARGV is
# the first fence, the count c, then each change's key and argument counts, then their
# arguments in order (each change's own fence argument is replaced by the running one).
_WRITE_IN_TURN = (
    _WRITE_ONE
    + """
local c = tonumber(ARGV[2])
local fence = ARGV[1]
local out = {}
local k, a = 0, 2 + 2 * c
for i = 1, c do
  local nk, na = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local K, A = {}, {}
  for x = 1, nk do K[x] = KEYS[k + x] end
  for x = 1, na do A[x] = ARGV[a + x] end
  k, a = k + nk, a + na
  A[1] = fence
  local r = write_one(K, A)
  out[i] = r
  if r == -1 then
    for rest = i + 1, c do out[rest] = -1 end
    return out
  end
  if r > 0 then fence = tostring(r) end
end
return out
"""
)


@dataclass
class Change:
    """New versions of a run and (some of) its jobs, to be written together.

    ``run`` and ``jobs`` carry the versions they were read at; on success their
    versions are bumped in place, like :meth:`Store.save_run` does.
    """

    run: Run | None
    jobs: list[Job] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    run_id: str = ""
    admitted_at: float | None = None
    forget_admission: bool = False
    attempt: bool = False
    """Count one more requeue of the run."""
    cleanup_at: float | None = None
    """A requeue is deleting the run's pods: the scheduler leaves it alone meanwhile."""
    cleanup_done: bool = False


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._script = store.r.register_script(_WRITE)
        self._in_turn = store.r.register_script(_WRITE_IN_TURN)

    def write(self, change: Change, *, fence: int | None = None) -> int:
        """Apply ``change``: :data:`OK` (or the new capacity version when fenced),
        :data:`CONFLICT` when a record moved on, :data:`FENCED` when capacity did."""
        record_keys, args, records = self._prepare(change, fence)
        with keys.wrapped():
            result = int(self._script(keys=record_keys, args=args))
        self._settle(records, ok=result > 0)
        return result

    def write_in_turn(self, changes: list[Change], *, fence: int) -> list[int]:
        """Fenced changes, as ``write`` called for each in turn with the version the one
        before returned, in one script run: each result as ``write``'s; after the first
        :data:`FENCED` nothing more is written (FENCED too)."""
        if not changes:
            return []
        prepared = [self._prepare(c, fence) for c in changes]
        all_keys: list[str] = []
        counts: list[str] = []
        all_args: list[str] = []
        for record_keys, args, _ in prepared:
            all_keys += record_keys
            all_args += args
            counts += [str(len(record_keys)), str(len(args))]
        with keys.wrapped():
            raw = self._in_turn(
                keys=all_keys, args=[str(fence), str(len(changes)), *counts, *all_args]
            )
        results = [int(r) for r in raw]
        for (_, _, records), result in zip(prepared, results, strict=True):
            self._settle(records, ok=result > 0)
        return results

    def write_many(self, changes: list[Change]) -> list[int]:
        """Unfenced changes in one pipeline (queue reasons for thousands of runs)."""
        if not changes:
            return []
        prepared = [self._prepare(c, None) for c in changes]
        with keys.wrapped():
            pipe = self.store.r.pipeline(transaction=False)
            for record_keys, args, _ in prepared:
                self._script(keys=record_keys, args=args, client=pipe)
            results = [int(r) for r in pipe.execute()]
        for (_, _, records), result in zip(prepared, results, strict=True):
            self._settle(records, ok=result > 0)
        return results

    def _prepare(
        self, change: Change, fence: int | None
    ) -> tuple[list[str], list[str], list[Run | Job]]:
        s = self.store
        run_id = change.run.id if change.run is not None else change.run_id
        records: list[Run | Job] = [*([change.run] if change.run else []), *change.jobs]
        now = time.time()
        record_keys = [
            keys.key(s, keys.CAPACITY_VERSION),
            s.key("events", run_id),
            s.key("active"),
            keys.key(s, keys.ADMITTED),
            keys.key(s, keys.ATTEMPTS),
            keys.key(s, keys.CLEANUP),
            *changes.log_keys(s.key),
        ]
        finished = change.run is not None and change.run.status.is_finished
        admitted = "-" if change.forget_admission else _stamp(change.admitted_at)
        cleanup = "-" if change.cleanup_done else _stamp(change.cleanup_at)
        args = [
            "" if fence is None else str(fence),
            run_id,
            "1" if finished else "0",
            admitted,
            "1" if change.attempt else "0",
            cleanup,
            str(len(records)),
        ]
        for record in records:
            key = s.key("run" if isinstance(record, Run) else "job", record.id)
            record_keys.append(key)
            record.updated_at = now
            expected = record.version
            record.version = expected + 1
            args += [str(expected), str(record.version), record.model_dump_json()]
            record.version = expected  # bumped for real in _settle, once Redis agreed
        args += [e.model_dump_json() for e in change.events]
        return record_keys, args, records

    @staticmethod
    def _settle(records: list[Run | Job], *, ok: bool) -> None:
        if ok:
            for record in records:
                record.version += 1


def _stamp(at: float | None) -> str:
    return "" if at is None else repr(at)
