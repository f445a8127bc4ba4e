"""Reading every active run and job for a pass, cheaply enough for 10,000 waiting runs.

A pass needs every active run and job, but almost none of them changed since
the last pass. :class:`RecordCache` keeps the parsed records of one process
and asks Redis only for their versions (one script call for thousands of
keys); records whose version moved are fetched again, in one pipeline. A
record is never trusted without its current version, so the view is as fresh
as reading everything, at a fraction of the cost (parsing a run costs ~65 us,
its configuration ~200 us more; a version costs well under 1 us).

Cached records are shared: callers copy before changing one (``model_copy``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.configuration.fields import InstanceRef
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError
from shared.placement.offers import Request
from shared.placement.requests import group_requests, request_for
from shared.queueing import keys
from shared.queueing.limits import Limits, limits_of
from shared.queueing.namespace_quota import memory_limit_of
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


class RecordCache:
    """One process's parsed runs and jobs, revalidated by version on every load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._jobs: dict[str, Job] = {}
        self._facts: dict[str, RunFacts] = {}
        self._derived: dict[str, tuple[object, object]] = {}
        self._requests: dict[Request, Request] = {}
        """Equal requests interned to one object, so the planner memoises them by id."""
        self._primary: str | None = None

    def load(self, store: Store) -> View:
        with self._lock, keys.wrapped():
            self._forget_after_failover(store)
            raw_version = store.r.get(keys.key(store, keys.CAPACITY_VERSION))
            active = store.r.register_script(_ACTIVE)(keys=[store.key("active")])
            ids = sorted(active.decode().split(",")) if active else []
            runs = self._refresh(store, Run, self._runs, "run", ids)
            job_ids = [j for run in runs for j in run.job_ids]
            jobs = {j.id: j for j in self._refresh(store, Job, self._jobs, "job", job_ids)}
            active = set(ids)
            for memo in (self._facts, self._derived):
                for gone in memo.keys() - active:
                    del memo[gone]
        by_run = {run.id: [jobs[j] for j in run.job_ids if j in jobs] for run in runs}
        for listed in by_run.values():
            if len(listed) > 1:
                listed.sort(key=lambda j: (j.replica_num, j.job_num))
        return View(capacity_version=int(raw_version or 0), runs=runs, jobs=by_run)

    def _forget_after_failover(self, store: Store) -> None:
        """Drop every cached record when the primary changed since the last load.

        Records are revalidated by version number, and a failover breaks that: the
        last writes the old primary took can be lost, and a record written again on
        the new primary can reach the very number the cache holds for the lost write,
        with other contents. Then the cache would keep the lost contents for good (a
        job it believes has a pod, whose pod was never recorded), and no pass or sweep
        would act on the job again. One INFO per load; a failover is rare.
        """
        primary = store.primary_id()
        if primary == self._primary:
            return
        if self._primary is not None:
            for memo in (self._runs, self._jobs, self._facts, self._derived):
                memo.clear()
        self._primary = primary

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

    def _refresh(
        self, store: Store, model: Any, cache: dict[str, Any], kind: str, ids: list[str]
    ) -> list[Any]:
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
                record = model.model_validate_json(data)
                record.version = int(version)
                cache[i] = record
        found = [c for i in ids if (c := cached(i)) is not None]
        if len(cache) != len(found):  # records deleted or no longer active
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
