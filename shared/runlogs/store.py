"""The log store: every job attempt's output in Redis, shared by all API and worker hosts.

Layout (``{p}`` the store prefix; the job id is a hash tag, so one job's keys
share a Redis Cluster slot):

* ``{p}:logs:{job}:attempts``: hash, attempt number -> pod uid. An attempt is
  one pod of the job; a ``retry`` makes a new one.
* ``{p}:logs:{job}:{a}``: a stream; each entry holds ``d`` (raw timestamped
  lines, whole lines only) and ``n`` (how many).
* ``{p}:logs:{job}:{a}:meta``: hash; ``ts``/``n``/``cut`` the resume cursor
  (:class:`~shared.runlogs.lines.Cursor`), ``bytes``/``lines`` kept (``unended``
  of them ended by the collector, having no newline), ``dropped`` lines trimmed
  for the cap, ``done`` once the container's output was read to its end,
  ``note`` why it ended early, ``printed`` the lines the container counted (how
  many of them the store lacks follows: :attr:`AttemptMeta.missing`),
  ``recovered`` lines put back in place from the container's own copy
  (:meth:`LogStore.rewrite`).

**Exactly once.** An append is one Lua script: it checks that the caller still
holds the collector lease (a collector that lost it cannot write) and that the
cursor it resumed from is still the stored one (two writers cannot interleave),
then adds the entry and moves the cursor together. A collector killed between
reading and appending re-reads from the stored cursor: nothing lost, nothing twice.

**Capped.** When an attempt's bytes pass the cap the oldest entries go, and
their line count is kept, so a reader is told ``N earlier lines dropped``.
Redis holds streams compactly (listpacks); bench/logs.py measures the memory
per MiB of output.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.runlogs.lines import Cursor
from shared.state.store import Store, wrapped

_APPEND = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local cur = redis.call('HMGET', KEYS[2], 'ts', 'n', 'done')
if cur[3] then return -3 end
if (cur[1] or '0') ~= ARGV[2] or (cur[2] or '0') ~= ARGV[3] then return -2 end
if ARGV[5] ~= '0' then redis.call('XADD', KEYS[1], '*', 'd', ARGV[4], 'n', ARGV[5]) end
redis.call('HSET', KEYS[2], 'ts', ARGV[6], 'n', ARGV[7], 'cut', ARGV[9])
redis.call('HINCRBY', KEYS[2], 'lines', ARGV[5])
if ARGV[10] ~= '0' then redis.call('HINCRBY', KEYS[2], 'unended', ARGV[10]) end
local total = redis.call('HINCRBY', KEYS[2], 'bytes', string.len(ARGV[4]))
local cap = tonumber(ARGV[8])
while total > cap do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first == 0 then break end
  local fields = first[1][2]
  local size, lines = 0, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then size = string.len(fields[i + 1]) end
    if fields[i] == 'n' then lines = tonumber(fields[i + 1]) end
  end
  redis.call('XDEL', KEYS[1], first[1][1])
  total = redis.call('HINCRBY', KEYS[2], 'bytes', -size)
  redis.call('HINCRBY', KEYS[2], 'dropped', lines)
end
return 1
"""

_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'done') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'done', '1', 'note', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'printed', ARGV[3]) end
return 1
"""

_REWRITE = """
local function refused(code) redis.call('DEL', KEYS[4]) return code end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return refused(-1) end
local cur = redis.call('HMGET', KEYS[2], 'ts', 'n', 'done', 'dropped')
if cur[3] then return refused(-3) end
if (cur[1] or '0') ~= ARGV[2] or (cur[2] or '0') ~= ARGV[3] then return refused(-2) end
if (cur[4] or '0') ~= '0' then return refused(-2) end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = ''
if #last > 0 then last_id = last[1][1] end
if last_id ~= ARGV[7] then return refused(-2) end
if redis.call('EXISTS', KEYS[4]) == 0 then return -2 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('RENAME', KEYS[4], KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
redis.call('HSET', KEYS[2], 'lines', ARGV[4], 'bytes', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'recovered', ARGV[6])
if ARGV[8] ~= '0' then redis.call('HINCRBY', KEYS[2], 'unended', ARGV[8]) end
return 1
"""

APPENDED = 1
LOST_LEASE = -1
"""The caller no longer holds the collector lease: another collector owns the logs."""
MOVED = -2
"""The stored cursor is not the one the caller resumed from: re-read it."""
FINISHED = -3
"""The attempt was already read to its end."""


@dataclass(frozen=True)
class AttemptMeta:
    """What the store knows about one attempt's output."""

    cursor: Cursor
    bytes: int = 0
    lines: int = 0
    dropped: int = 0
    done: bool = False
    note: str = ""
    unended: int = 0
    """Of ``lines``, those that had no newline (the collector ended them): the container,
    counting newlines, did not count them."""
    printed: int | None = None
    """Lines the container said it printed, once its output is complete (None: unsaid)."""
    recovered: int = 0
    """Of ``lines``, those the kubelet never served, put back from the container's copy."""

    @property
    def missing(self) -> int:
        """Of ``printed``, how many the store never got (the kubelet never served them):
        fixed once ``done``, since no append is taken after."""
        return 0 if self.printed is None else self.lacking(self.printed)

    def lacking(self, printed: int) -> int:
        """Of ``printed`` lines the container counted, how many are not stored. A line
        the collector ended itself (the output's last, with no newline) was never
        counted by ``wc -l``."""
        return max(0, printed - (self.lines - self.unended))


@dataclass(frozen=True)
class Entry:
    id: str
    data: bytes
    """Whole raw lines, each ending in a newline."""


class LogStore:
    """Appends (the collector) and reads (the API) of job attempts' output."""

    def __init__(self, store: Store, *, cap_bytes: int) -> None:
        self.store = store
        self.cap_bytes = cap_bytes
        self._append = store.r.register_script(_APPEND)
        self._finish = store.r.register_script(_FINISH)
        self._rewrite = store.r.register_script(_REWRITE)

    def lease_key(self) -> str:
        return self.store.key("lease", "log-collector")

    def register_attempt(self, job_id: str, attempt: int, pod_uid: str) -> None:
        with wrapped():
            self.store.r.hsetnx(self._attempts_key(job_id), str(attempt), pod_uid)

    def attempts(self, job_id: str) -> dict[int, str]:
        """Attempt number -> pod uid, for every attempt the collector has seen."""
        with wrapped():
            raw = self.store.r.hgetall(self._attempts_key(job_id))
        return {int(k): v.decode() for k, v in raw.items()}

    def meta(self, job_id: str, attempt: int) -> AttemptMeta:
        with wrapped():
            raw = self.store.r.hgetall(self._meta_key(job_id, attempt))
        got = {k.decode(): v.decode() for k, v in raw.items()}
        return AttemptMeta(
            cursor=Cursor(int(got.get("ts", 0)), int(got.get("n", 0)), got.get("cut") == "1"),
            bytes=int(got.get("bytes", 0)),
            lines=int(got.get("lines", 0)),
            dropped=int(got.get("dropped", 0)),
            done=got.get("done") == "1",
            note=got.get("note", ""),
            unended=int(got.get("unended", 0)),
            printed=int(got["printed"]) if "printed" in got else None,
            recovered=int(got.get("recovered", 0)),
        )

    def append(
        self,
        job_id: str,
        attempt: int,
        data: bytes,
        *,
        lines: int,
        before: Cursor,
        after: Cursor,
        holder: str,
        unended: int = 0,
    ) -> int:
        """Add whole lines if ``holder`` leads and the stored cursor is ``before``
        (no lines: only move the cursor, as when a cut line's end was read); ``unended``
        of the lines had no newline of their own.

        Returns :data:`APPENDED`, :data:`LOST_LEASE`, :data:`MOVED` or :data:`FINISHED`.
        """
        keys = [
            self._stream_key(job_id, attempt),
            self._meta_key(job_id, attempt),
            self.lease_key(),
        ]
        args: list[str | bytes | int] = [
            holder,
            str(before.ts_ns),
            str(before.n),
            data,
            lines,
            str(after.ts_ns),
            str(after.n),
            self.cap_bytes,
            "1" if after.cut else "0",
            unended,
        ]
        with wrapped():
            return int(self._append(keys=keys, args=args))

    def finish(
        self,
        job_id: str,
        attempt: int,
        *,
        holder: str,
        note: str = "",
        printed: int | None = None,
    ) -> bool:
        """Mark the attempt read to its end (``note`` says why, if not by the container's
        exit; ``printed``: the container's own count of its lines). False if the lease
        is not the caller's, or the attempt was already marked: the first mark stands, so
        a late one (the pod deleted after its output was read) does not rewrite why it
        ended."""
        keys = [self._meta_key(job_id, attempt), self.lease_key()]
        counted = "" if printed is None else str(printed)
        with wrapped():
            return int(self._finish(keys=keys, args=[holder, note, counted])) == 1

    def rewrite(
        self,
        job_id: str,
        attempt: int,
        entries: list[tuple[str, bytes, int]],
        *,
        recovered: int,
        cursor: Cursor,
        last_id: str,
        holder: str,
        unended: int = 0,
    ) -> int:
        """Replace the attempt's stream with ``entries`` (id, whole lines, how many), which
        hold ``recovered`` more lines than it (``unended`` of them had no newline): the
        lines the kubelet never served, put back in place
        (``workers/collector/recovery.py``). The ids are the stream's own, so a reader
        that has read up to one goes on after it with no line twice; an id
        ``*`` is a new entry (the stream had none). Taken only if ``holder`` leads, the
        attempt is not done, nothing was trimmed for the cap, and the cursor and the last
        entry are still ``cursor`` and ``last_id`` (nothing appended since the caller read
        the stream); the new stream is built aside and swapped in at once.

        Returns :data:`APPENDED` (swapped), :data:`LOST_LEASE`, :data:`MOVED` or
        :data:`FINISHED`.
        """
        aside = self._stream_key(job_id, attempt) + ":rewrite"
        total_lines = sum(n for _, _, n in entries)
        total_bytes = sum(len(d) for _, d, _ in entries)
        keys = [self._stream_key(job_id, attempt), self._meta_key(job_id, attempt)]
        keys += [self.lease_key(), aside]
        args: list[str | int] = [holder, str(cursor.ts_ns), str(cursor.n)]
        args += [total_lines, total_bytes, recovered, last_id, unended]
        with wrapped():
            pipe = self.store.r.pipeline(transaction=True)
            pipe.delete(aside)
            for entry_id, data, n in entries:
                pipe.xadd(aside, {"d": data, "n": n}, id=entry_id)
            pipe.expire(aside, 600)  # a collector killed before the swap leaves no litter
            pipe.execute()
            return int(self._rewrite(keys=keys, args=args))

    def entries(self, job_id: str, attempt: int, *, after: str, count: int) -> list[Entry]:
        """Up to ``count`` entries after the entry id ``after`` (``-`` from the start)."""
        start = "-" if after == "-" else f"({after}"
        with wrapped():
            raw = self.store.r.xrange(self._stream_key(job_id, attempt), start, "+", count=count)
        return [_entry(i, f) for i, f in raw]

    def last_entries(self, job_id: str, attempt: int, *, before: str, count: int) -> list[Entry]:
        """Up to ``count`` entries before ``before`` (``+`` from the end), newest first."""
        end = "+" if before == "+" else f"({before}"
        with wrapped():
            raw = self.store.r.xrevrange(self._stream_key(job_id, attempt), end, "-", count=count)
        return [_entry(i, f) for i, f in raw]

    def wait(self, job_id: str, attempt: int, *, after: str, block_ms: int) -> list[Entry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first."""
        key = self._stream_key(job_id, attempt)
        with wrapped():
            raw = self.store.r.xread({key: "0-0" if after == "-" else after}, block=block_ms)
        return [_entry(i, f) for _, items in raw for i, f in items]

    def delete(self, job_ids: list[str]) -> None:
        """Forget every attempt's output of these jobs."""
        with wrapped():
            for job_id in job_ids:
                attempts = self.store.r.hkeys(self._attempts_key(job_id))
                doomed = [self._attempts_key(job_id)]
                for a in attempts:
                    n = int(a)
                    doomed += [self._stream_key(job_id, n), self._meta_key(job_id, n)]
                self.store.r.delete(*doomed)

    def _attempts_key(self, job_id: str) -> str:
        return self.store.key("logs", f"{{{job_id}}}", "attempts")

    def _stream_key(self, job_id: str, attempt: int) -> str:
        return self.store.key("logs", f"{{{job_id}}}", str(attempt))

    def _meta_key(self, job_id: str, attempt: int) -> str:
        return self.store.key("logs", f"{{{job_id}}}", str(attempt), "meta")


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    return Entry(id=entry_id.decode(), data=fields.get(b"d", b""))
