"""Reading every active run and job for a pass, at a cost that follows what changed.

A pass needs every active run and job, but almost none of them changed since
the last pass. :class:`RecordCache` keeps the parsed records of one process
and asks Redis what was written since its last read (the change log,
:mod:`shared.state.changes`): one script call returns the capacity version and
every changed record with its version, data and place in the active set, read
at one instant. A pass at 10,000 waiting runs reads the few hundred records
that moved, not 20,000 versions (parsing a run costs ~65 us, its configuration
~200 us more).

It reads everything instead (the active set, every record's version, the
records whose version moved) the first time, when the log cannot tell (reset,
or trimmed past this reader), after a failover, and every ``FULL_EVERY_S``
all the same: a writer that bypassed the log delays a decision by at most that
long and loses none, as every record write is a compare-and-set on its version.

Cached records are shared: callers copy before changing one (``model_copy``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.configuration.fields import InstanceRef
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError
from shared.placement.offers import Request
from shared.placement.requests import group_requests, request_for
from shared.queueing import keys
from shared.queueing.heads import QueueHeads, QueueIndex
from shared.queueing.limits import Limits, limits_of
from shared.queueing.namespace_quota import memory_limit_of
from shared.state import changes
from shared.state.records import Job, Run
from shared.state.store import Store
from shared.volumes.volume_placement import mounted_volumes

# Versions of many records as one comma-joined string: one bulk reply parses far faster
# than thousands of array elements in redis-py's pure-Python reader. Keys are built from
# ARGV (prefix + ids) rather than declared, which plain Redis allows (Berth does not run
# on Redis Cluster, where every key of a script must be declared).
_VERSIONS = """
local out = {}
local i = 1
for id in string.gmatch(ARGV[2], '[^,]+') do
  out[i] = redis.call('HGET', ARGV[1] .. id, 'v') or ''
  i = i + 1
end
return table.concat(out, ',')
"""
_ACTIVE = "return table.concat(redis.call('SMEMBERS', KEYS[1]), ',')"
_CHUNK = 5_000  # records per script call: a few milliseconds of Redis time at most
# What changed since ARGV[1] (the last number this reader saw, in epoch ARGV[2]), read at one
# instant. KEYS: capacity version, the log's counter, log, floor and epoch, the active set.
# ARGV: last number, epoch, a new epoch's token, entries kept, most changes to return, the
# run keys' prefix. Reply: capacity version, number, epoch, then 'full' (read everything)
# or 'log' followed by (key, in the active set, version, data) per changed record.
_CHANGES = """
local cap = redis.call('GET', KEYS[1]) or '0'
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  redis.call('SET', KEYS[5], ARGV[3])
  epoch = ARGV[3]
end
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if over > 0 then
  local last = redis.call('ZRANGE', KEYS[3], over - 1, over - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
  if tonumber(last[2]) > tonumber(redis.call('GET', KEYS[4]) or '0') then
    redis.call('SET', KEYS[4], last[2])
  end
end
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
local mine = tonumber(ARGV[1])
local out = {cap, tostring(seq), epoch, 'full'}
if epoch ~= ARGV[2] or mine < floor or mine > seq then return out end
local most = tonumber(ARGV[5])
local keys = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'LIMIT', 0, most + 1)
if #keys > most then return out end
out[4] = 'log'
local prefix = ARGV[6]
for _, key in ipairs(keys) do
  local vd = redis.call('HMGET', key, 'v', 'd')
  local active = '0'
  if string.sub(key, 1, #prefix) == prefix then
    active = tostring(redis.call('SISMEMBER', KEYS[6], string.sub(key, #prefix + 1)))
  end
  out[#out + 1] = key
  out[#out + 1] = active
  out[#out + 1] = vd[1]
  out[#out + 1] = vd[2]
end
return out
"""
FULL_EVERY_S = 300.0
"""A full read at least this often, whatever the log says (see the module docstring)."""
_MOST_CHANGES = 20_000  # past this many changed records a full read costs no more


@dataclass(frozen=True)
class RunFacts:
    """What a run's configuration means to the queue; fixed for the run's life."""

    request: Request
    fleets: tuple[str, ...]
    limits: Limits
    error: str = ""
    """Set when the stored configuration no longer parses; the run then fails."""
    memory_limit_bytes: int | None = None
    """Its pods' memory limit, which a ``limits.memory`` namespace quota counts."""
    instances: tuple[InstanceRef, ...] = ()
    """dstack's ``instances``: the only nodes it may use."""
    group_requests: Mapping[str, Request] = field(default_factory=dict)
    """Group name -> its jobs' request, when the run's groups ask for different resources."""
    mounts: tuple[str, ...] = ()
    """The project volumes it mounts (``mounted_volumes``; read once, not every pass)."""


@dataclass
class View:
    capacity_version: int
    """Read before any record: a placement made after it changes it (see commit)."""
    runs: list[Run]
    jobs: dict[str, list[Job]]
    """Run id -> its jobs in (replica, rank) order."""
    queue: QueueHeads | None = None
    """The heads of the queues (when :meth:`RecordCache.load` was asked for them)."""
    whole: bool = True
    """Every active run is in ``runs``; False: the queued runs past the heads are not
    (a quick pass's view, :mod:`shared.queueing.heads`)."""


class RecordCache:
    """One process's parsed runs and jobs, kept current by the change log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        """Active run id -> its record."""
        self._jobs: dict[str, Job] = {}
        """The active runs' jobs, by id."""
        self._by_run: dict[str, list[Job]] = {}
        """Active run id -> its jobs in (replica, rank) order."""
        self._facts: dict[str, RunFacts] = {}
        self._derived: dict[str, tuple[object, object]] = {}
        self._queue = QueueIndex()
        """Each project's queued runs in queue order, for quick passes."""
        self._requests: dict[Request, Request] = {}
        """Equal requests interned to one object, so the planner memoises them by id."""
        self._primary: str | None = None
        self._seen = -1  # the last change number read; -1: read everything next
        self._epoch = ""
        self._full_at = float("-inf")
        self.full_reads = 0
        """Loads that read everything (the log could not tell, or FULL_EVERY_S passed)."""

    def load(
        self,
        store: Store,
        *,
        heads: int | None = None,
        whole: Callable[[QueueHeads], bool] | None = None,
    ) -> View:
        """Every active run and job. With ``heads``, also each project's first ``heads``
        queued runs (:mod:`shared.queueing.heads`); then, unless ``whole`` says the pass
        must see every run, the view holds only those of the queued runs."""
        with self._lock, keys.wrapped():
            self._forget_after_failover(store)
            reply = store.r.register_script(_CHANGES)(
                keys=[
                    keys.key(store, keys.CAPACITY_VERSION),
                    *changes.log_keys(store.key),
                    *changes.reader_keys(store.key),
                    store.key("active"),
                ],
                args=[
                    self._seen,
                    self._epoch,
                    secrets.token_hex(8),
                    changes.MAX_ENTRIES,
                    _MOST_CHANGES,
                    store.key("run", ""),
                ],
            )
            capacity, seen, epoch, mode = (
                int(reply[0]),
                int(reply[1]),
                reply[2].decode(),
                reply[3],
            )
            now = time.monotonic()
            if mode == b"log" and now - self._full_at < FULL_EVERY_S:
                self._apply_log(store, reply[4:])
            else:
                self._read_all(store)
                self._full_at = now
                self.full_reads += 1
            self._seen, self._epoch = seen, epoch
            queue = self._queue.heads(heads) if heads is not None else None
            if queue is not None and queue.cut and whole is not None and not whole(queue):
                # The runs not queued and the heads: nothing past the heads is visited.
                kept = (self._runs.keys() - self._queue.queued()) | queue.heads
                ids = sorted(kept)
                by_run = {i: self._by_run[i] for i in ids}
                every = False
            else:
                ids = sorted(self._runs)
                by_run = dict(self._by_run)
                every = True
            runs = [self._runs[i] for i in ids]
        return View(capacity, runs, by_run, queue=queue, whole=every)

    def _forget_after_failover(self, store: Store) -> None:
        """Drop every cached record when the primary changed since the last load.

        Records are revalidated by version number, and a failover breaks that: the
        last writes the old primary took can be lost, and a record written again on
        the new primary can reach the very number the cache holds for the lost write,
        with other contents. Then the cache would keep the lost contents for good (a
        job it believes has a pod, whose pod was never recorded), and no pass or sweep
        would act on the job again. The change log's numbers can go back the same way.
        One INFO per load; a failover is rare.
        """
        primary = store.primary_id()
        if primary == self._primary:
            return
        if self._primary is not None:
            for memo in (self._runs, self._jobs, self._by_run, self._facts, self._derived):
                memo.clear()
            self._queue.clear()
            self._seen = -1
        self._primary = primary

    def _read_all(self, store: Store) -> None:
        """Every active run and job, reparsing only those whose version moved."""
        active = store.r.register_script(_ACTIVE)(keys=[store.key("active")])
        ids = sorted(active.decode().split(",")) if active else []
        runs = _refresh(store, Run, self._runs, "run", ids, prune=True)
        job_ids = [j for run in runs for j in run.job_ids]
        _refresh(store, Job, self._jobs, "job", job_ids, prune=True)
        self._by_run = {run.id: self._jobs_of(run) for run in runs}
        self._queue.clear()
        for run in runs:
            self._queue.update(run.id, run, self._by_run[run.id])
        self._forget_inactive()

    def _apply_log(self, store: Store, entries: list[Any]) -> None:
        """Take in the records written since the last load (key, active, version, data)."""
        run_prefix = store.key("run", "").encode()
        job_prefix = store.key("job", "").encode()
        touched: set[str] = set()
        new_jobs: list[tuple[str, bytes, bytes | None]] = []
        for at in range(0, len(entries), 4):
            key, active, version, data = entries[at : at + 4]
            if key.startswith(run_prefix):
                run_id = key[len(run_prefix) :].decode()
                touched.add(run_id)
                if data is None or active != b"1":
                    self._runs.pop(run_id, None)
                    continue
                _keep(self._runs, Run, run_id, version, data)
            elif key.startswith(job_prefix):
                new_jobs.append((key[len(job_prefix) :].decode(), version, data))
        for job_id, version, data in new_jobs:
            if data is None:
                self._jobs.pop(job_id, None)
                continue
            job = _keep(self._jobs, Job, job_id, version, data)
            touched.add(job.run_id)
        missing = [
            j for i in touched if (r := self._runs.get(i)) for j in r.job_ids if j not in self._jobs
        ]
        if missing:  # never expected (a run's jobs are written with it); read them
            _refresh(store, Job, self._jobs, "job", missing, prune=False)
        for run_id in touched:
            run = self._runs.get(run_id)
            if run is not None:
                self._by_run[run_id] = self._jobs_of(run)
                self._queue.update(run_id, run, self._by_run[run_id])
            else:
                self._queue.update(run_id, None, ())
                for job in self._by_run.pop(run_id, ()):
                    self._jobs.pop(job.id, None)
                self._facts.pop(run_id, None)
                self._derived.pop(run_id, None)
        for job_id, _, _ in new_jobs:  # a job of a run no longer active is not kept
            job = self._jobs.get(job_id)
            if job is not None and job.run_id not in self._runs:
                del self._jobs[job_id]

    def _jobs_of(self, run: Run) -> list[Job]:
        listed = [job for j in run.job_ids if (job := self._jobs.get(j)) is not None]
        if len(listed) > 1:
            listed.sort(key=lambda j: (j.replica_num, j.job_num))
        return listed

    def _forget_inactive(self) -> None:
        for memo in (self._facts, self._derived):
            for gone in memo.keys() - self._runs.keys():
                del memo[gone]

    def facts(self, run: Run) -> RunFacts:
        facts = self._facts.get(run.id)
        if facts is None:
            # From the stored dict, so known even when the configuration no longer parses:
            # a running run's claims still bind the nodes it holds.
            mounts = tuple(mounted_volumes(run.configuration))
            try:
                conf = configuration_from_stored(run.configuration)
                request = request_for(conf)
                facts = RunFacts(
                    request=self._requests.setdefault(request, request),
                    fleets=tuple(getattr(conf, "fleets", None) or ()),
                    limits=limits_of(conf),
                    memory_limit_bytes=memory_limit_of(conf),
                    instances=tuple(getattr(conf, "instances", None) or ()),
                    group_requests=group_requests(conf),
                    mounts=mounts,
                )
            except ConfigError as e:
                facts = RunFacts(
                    request=Request(), fleets=(), limits=Limits(), error=str(e), mounts=mounts
                )
            self._facts[run.id] = facts
        return facts

    def derived(self, run_id: str, stamp: object) -> object | None:
        """What a caller derived from a run when its records had versions ``stamp``."""
        found = self._derived.get(run_id)
        return found[1] if found is not None and found[0] == stamp else None

    def remember(self, run_id: str, stamp: object, value: object) -> None:
        self._derived[run_id] = (stamp, value)


def _keep(cache: dict[str, Any], model: Any, record_id: str, version: bytes, data: bytes) -> Any:
    """The cached record when its version is ``version``, else ``data`` parsed into it."""
    cached = cache.get(record_id)
    if cached is not None and cached.version == int(version):
        return cached
    record = model.model_validate_json(data)
    record.version = int(version)
    cache[record_id] = record
    return record


def _refresh(
    store: Store, model: Any, cache: dict[str, Any], kind: str, ids: list[str], *, prune: bool
) -> list[Any]:
    """``ids``' records (those that exist), reparsing those whose version moved; with
    ``prune``, ``cache`` keeps no other record."""
    versions = _versions(store, store.key(kind, ""), ids)
    cached = cache.get
    stale = [
        i
        for i, v in zip(ids, versions, strict=True)
        if v is not None and ((c := cached(i)) is None or c.version != v)
    ]
    if stale:
        pipe = store.r.pipeline(transaction=False)
        for i in stale:
            pipe.hmget(store.key(kind, i), ["v", "d"])
        for i, (version, data) in zip(stale, pipe.execute(), strict=True):
            if data is None or version is None:
                cache.pop(i, None)
                continue
            _keep(cache, model, i, version, data)
    found = [c for i in ids if (c := cached(i)) is not None]
    if prune and len(cache) != len(found):  # records deleted or no longer active
        keep = {r.id for r in found}
        for gone in cache.keys() - keep:
            del cache[gone]
    return found


def _versions(store: Store, prefix: str, ids: list[str]) -> list[int | None]:
    script = store.r.register_script(_VERSIONS)
    out: list[int | None] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        raw: bytes = script(keys=[], args=[prefix, ",".join(chunk)])
        out.extend(int(v) if v else None for v in raw.decode().split(","))
    return out
