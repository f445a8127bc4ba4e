"""Redis as Berth's system of record.

Layout (every key starts with the configured prefix ``P``)::

    P:user:<name>            JSON User          P:token:<sha256>   user name
    P:project:<name>         JSON Project       P:projects         set of names
    P:run:<id>               hash {v, d}        P:runname:<project>:<name>  run id
    P:runs:<project>         zset id by submit time
    P:job:<id>               hash {v, d}        P:events:<run id>  stream of Event
    P:fleet:<project>:<name> JSON Fleet         P:active           set of unfinished run ids
    P:volume:<project>:<name> JSON Volume

Runs and jobs are written only by compare-and-set on their version (a Lua
script), together with the event the change produces, so a duplicate or late
task can never overwrite newer state, and no change is recorded without its
event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import redis
from redis.sentinel import MasterNotFoundError

from shared.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    ReplicationError,
    StoreError,
)
from shared.settings import RedisSettings
from shared.state import changes, redis_client
from shared.state.records import Event, Fleet, Job, Project, Run, RunStatus, User, Volume

M = TypeVar("M", Run, Job)

# KEYS[1] record, KEYS[2] event stream, KEYS[3..4] the change log (shared.state.changes);
# ARGV: expected version, new version, data, event.
_CAS = (
    changes.NOTE_LUA
    + """
local cur = redis.call('HGET', KEYS[1], 'v')
if (cur or '-1') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
note(KEYS[3], KEYS[4], KEYS[1])
if ARGV[4] ~= '' then redis.call('XADD', KEYS[2], '*', 'e', ARGV[4]) end
return 1
"""
)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The snapshot only when its version is not the caller's: an unchanged inventory
# costs a pass one small reply instead of the whole JSON (megabytes at 5,000 nodes).
_INVENTORY_IF_CHANGED = """
local version = redis.call('GET', KEYS[1]) or '0'
if version == ARGV[1] and version ~= '0' then return {version} end
return {version, redis.call('GET', KEYS[2])}
"""
_EVENTS_MAX = 10_000  # per run; a chatty run keeps its newest events
# How long a run refused (503) but kept is the one a retry of it gets, finished or not.
_REFUSED_KEPT_S = 3600


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Runs read per round trip when paging through history, and at most per page.
_PAGE_BATCH = 200
_PAGE_MAX_SCAN = 5_000


@dataclass(frozen=True)
class RunCursor:
    """Where a page of run history ended: the last run's submission time and id."""

    score: float
    run_id: str

    def encode(self) -> str:
        return f"{self.score!r}:{self.run_id}"

    @classmethod
    def decode(cls, text: str) -> RunCursor:
        score, sep, run_id = text.partition(":")
        try:
            if not sep or not run_id:
                raise ValueError(text)
            return cls(score=float(score), run_id=run_id)
        except ValueError as e:
            raise ConfigError(f"invalid cursor {text!r}", field="cursor") from e


class Store:
    """Typed access to Berth's records. Every Redis error becomes StoreError."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        prefix: str,
        min_replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
    ) -> None:
        self.r = client
        self.p = prefix
        self.min_replica_acks = min_replica_acks
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self._cas = client.register_script(_CAS)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._inventory_if_changed = client.register_script(_INVENTORY_IF_CHANGED)
        self._run_types: dict[str, str] = {}
        """Active run id -> its configuration type, which is fixed for a run's life."""
        self._run_types_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: RedisSettings,
        *,
        timeout_s: float | None = None,
        retries: int = redis_client.RETRIES,
    ) -> Store:
        """The store as Berth's processes use it: one Redis or a Sentinel group, and the
        replica acknowledgement the settings ask for."""
        timeout = settings.socket_timeout_s if timeout_s is None else timeout_s
        if settings.min_replica_acks and settings.replica_ack_timeout_ms >= timeout * 1000:
            raise ConfigError(
                f"{settings.replica_ack_timeout_ms} ms is not below the {timeout} s socket"
                " timeout: the wait would outlive the connection",
                field="redis.replica_ack_timeout_ms",
            )
        return cls(
            redis_client.connect(settings, timeout_s=timeout_s, retries=retries),
            prefix=settings.key_prefix,
            min_replica_acks=settings.min_replica_acks,
            replica_ack_timeout_ms=settings.replica_ack_timeout_ms,
        )

    @classmethod
    def connect(cls, url: str, *, prefix: str, timeout_s: float) -> Store:
        """A store on the one Redis of ``url`` (tests and benches)."""
        return cls.from_settings(RedisSettings(url=url, key_prefix=prefix), timeout_s=timeout_s)

    def close(self) -> None:
        self.r.close()

    def ping(self) -> None:
        with _wrapped():
            self.r.ping()

    def primary_id(self) -> str:
        """The replication id of the Redis this store writes to. A failover (a replica
        promoted) changes it, and may have dropped the last writes the old primary took
        (those no replica had yet); a cache of records must not trust its versions then.
        Empty where INFO is not allowed (some managed services)."""
        try:
            with _wrapped():
                info = self.r.info("replication")
        except StoreError:
            return ""
        return str(info.get("master_replid", ""))

    def confirm_replicated(self, what: str) -> None:
        """Return once ``min_replica_acks`` replicas hold every write the primary has
        taken so far; raise :class:`ReplicationError` if fewer did within the timeout.

        ``WAIT`` counts the replicas that acknowledged the writes made on *its own*
        connection, and the pool may hand this call another connection than the
        write's. So a marker is written first on the connection that waits: the
        replication stream is one ordered log, so a replica that has the marker has
        everything written before it, the caller's write included.
        """
        if not self.min_replica_acks:
            return
        with _wrapped():
            pipe = self.r.pipeline(transaction=False)
            pipe.incr(self.key("replication", "mark"))
            pipe.wait(self.min_replica_acks, self.replica_ack_timeout_ms)
            acks = int(pipe.execute()[1])
        if acks < self.min_replica_acks:
            raise ReplicationError(
                f"only {acks} of the {self.min_replica_acks} Redis replicas Berth waits for"
                f" (redis.min_replica_acks) acknowledged the {what} within"
                f" {self.replica_ack_timeout_ms} ms; a failover now could lose it, so it"
                " is not taken: retry later"
            )

    def key(self, *parts: str) -> str:
        return ":".join((self.p, *parts))

    # -- users and projects -------------------------------------------------

    def put_user(self, user: User) -> None:
        with _wrapped():
            pipe = self.r.pipeline()
            pipe.set(self.key("user", user.name), user.model_dump_json())
            pipe.set(self.key("token", user.token_sha256), user.name)
            pipe.execute()

    def user_by_token(self, token: str) -> User | None:
        with _wrapped():
            name = self.r.get(self.key("token", token_sha256(token)))
            if name is None:
                return None
            raw = self.r.get(self.key("user", name.decode()))
        return User.model_validate_json(raw) if raw else None

    def get_user(self, name: str) -> User | None:
        with _wrapped():
            raw = self.r.get(self.key("user", name))
        return User.model_validate_json(raw) if raw else None

    def put_project(self, project: Project) -> None:
        with _wrapped():
            pipe = self.r.pipeline()
            pipe.set(self.key("project", project.name), project.model_dump_json())
            pipe.sadd(self.key("projects"), project.name)
            pipe.execute()

    def get_project(self, name: str) -> Project | None:
        with _wrapped():
            raw = self.r.get(self.key("project", name))
        return Project.model_validate_json(raw) if raw else None

    def project_names(self) -> list[str]:
        with _wrapped():
            return sorted(n.decode() for n in self.r.smembers(self.key("projects")))

    # -- runs and jobs -------------------------------------------------------

    def create_run(self, run: Run, jobs: list[Job], event: Event) -> None:
        """Record a new run and its jobs atomically; refuse a name still in use."""
        name_key = self.key("runname", run.project, run.name)
        with _wrapped():
            existing = self.r.get(name_key)
            if existing is not None:
                old = self.find_run(existing.decode())
                if old is not None and not old.status.is_finished:
                    raise ConflictError(
                        f"run {run.name!r} is still {old.status}; stop it or pick another name",
                        field="name",
                    )
                if old is not None and run.repeats(old) and self.refused_but_kept(old):
                    # The retry of a submission answered 503 yet kept, which has finished
                    # since: it must get that run back, not start the work a second time.
                    raise ConflictError(
                        f"run {run.name!r} was kept after a refused submission", field="name"
                    )
            pipe = self.r.pipeline(transaction=True)
            pipe.set(name_key, run.id)
            pipe.delete(self.key("expired", run.project, run.name))  # the name lives again
            pipe.hset(
                self.key("run", run.id), mapping={"v": run.version, "d": run.model_dump_json()}
            )
            pipe.zadd(self.key("runs", run.project), {run.id: run.submitted_at})
            pipe.sadd(self.key("active"), run.id)
            for job in jobs:
                pipe.hset(
                    self.key("job", job.id), mapping={"v": job.version, "d": job.model_dump_json()}
                )
            pipe.xadd(
                self.key("events", run.id), {"e": event.model_dump_json()}, maxlen=_EVENTS_MAX
            )
            changes.note_in(pipe, self.key, self._record_keys(run.id, [j.id for j in jobs]))
            pipe.execute()
        # The API answers 202 only for a run a failover cannot lose. Unacknowledged, the
        # run is withdrawn if nobody has acted on it yet, so the 503 means "not taken"
        # and the client's retry records it again; one a scheduling pass already moved
        # stays, and the retry gets it back (api.services.runs._same_submission).
        try:
            self.confirm_replicated("new run")
        except ReplicationError:
            if not self._withdraw(run, jobs):
                # Kept, and refused all the same: the client's retry must get this run
                # back even if it has finished by then, never start it a second time.
                with contextlib.suppress(redis.RedisError):
                    self.r.set(self._refused_key(run), run.id, ex=_REFUSED_KEPT_S)
            raise

    def refused_but_kept(self, run: Run) -> bool:
        """Whether ``run`` was answered 503 yet kept (a pass had acted on it first)."""
        with _wrapped():
            return self.r.get(self._refused_key(run)) == run.id.encode()

    def forget_refusal(self, run: Run) -> None:
        """The retry of ``run``'s refused submission got it back: the name is free again
        once ``run`` finishes, even for the same configuration."""
        with _wrapped():
            self.r.delete(self._refused_key(run))

    def _refused_key(self, run: Run) -> str:
        return self.key("refused-kept", run.project, run.name)

    def _withdraw(self, run: Run, jobs: list[Job]) -> bool:
        """Delete a just-created run whose record no one has changed yet (best effort);
        whether it was deleted."""
        name_key = self.key("runname", run.project, run.name)
        keys = [self.key("run", run.id), *(self.key("job", j.id) for j in jobs)]
        versions = [str(run.version).encode(), *(str(j.version).encode() for j in jobs)]
        with contextlib.suppress(redis.RedisError), self.r.pipeline(transaction=True) as pipe:
            pipe.watch(name_key, *keys)
            untouched = [self.r.hget(k, "v") for k in keys] == versions  # watched from here
            if not untouched or self.r.get(name_key) != run.id.encode():
                return False  # a scheduler already acted on it: it stays, a retry finds it
            pipe.multi()
            self._delete_run_in(pipe, run)
            pipe.delete(name_key)
            pipe.execute()
            return True
        return False

    def find_run(self, run_id: str) -> Run | None:
        return self._load(Run, self.key("run", run_id))

    def get_run(self, run_id: str) -> Run:
        run = self.find_run(run_id)
        if run is None:
            raise NotFoundError(f"run {run_id} not found")
        return run

    def run_by_name(self, project: str, name: str) -> Run:
        with _wrapped():
            run_id = self.r.get(self.key("runname", project, name))
        run = self.find_run(run_id.decode()) if run_id else None
        if run is None or run.project != project:
            with _wrapped():
                expired = self.r.get(self.key("expired", project, name))
            if expired is not None:
                raise NotFoundError(
                    f"run {name!r} has expired: {expired.decode()}; its records and output"
                    " are deleted",
                    field="name",
                )
            raise NotFoundError(f"no run named {name!r} in project {project!r}", field="name")
        return run

    def older_runs(self, project: str, *, before: float, count: int) -> list[Run]:
        """Up to ``count`` runs of ``project`` submitted before ``before``, oldest first."""
        with _wrapped():
            ids = self.r.zrangebyscore(self.key("runs", project), "-inf", before, 0, count)
        return self.find_runs([i.decode() for i in ids])

    def mark_expired(self, run: Run, *, reason: str, ttl_s: int) -> None:
        """Remember for ``ttl_s`` why ``run``'s name no longer answers (see run_by_name)."""
        with _wrapped():
            self.r.set(self.key("expired", run.project, run.name), reason, ex=max(1, ttl_s))

    def active_runs(self, project: str) -> list[Run]:
        """Every run of ``project`` not finished, newest first, however long the history.

        Two round trips whatever the history holds: the set of active runs (all
        projects) and their records; finished runs are never read.
        """
        runs = [r for r in self.find_runs(self.active_run_ids()) if r.project == project]
        return sorted(runs, key=lambda r: (r.submitted_at, r.id), reverse=True)

    def page_runs(
        self,
        project: str,
        *,
        limit: int,
        before: RunCursor | None = None,
        keep: Callable[[Run], bool] = lambda _r: True,
        max_scan: int = _PAGE_MAX_SCAN,
    ) -> tuple[list[Run], RunCursor | None]:
        """Up to ``limit`` runs ``keep`` accepts, newest first, older than ``before``.

        Returns the page and the cursor of the next one (``None`` at the end of the
        history). A filter that matches little stops after ``max_scan`` runs read
        with a cursor to go on from, so one page is a bounded number of round trips.
        """
        key = self.key("runs", project)
        page: list[Run] = []
        cursor = before
        scanned = 0
        while len(page) < limit and scanned < max_scan:
            batch = self._older(key, cursor, _PAGE_BATCH)
            if not batch:
                return page, None
            scanned += len(batch)
            for run in self.find_runs([run_id for run_id, _ in batch]):
                if keep(run) and len(page) < limit:
                    page.append(run)
            cursor = RunCursor(score=batch[-1][1], run_id=batch[-1][0])
            if len(page) == limit:
                last = page[-1]
                cursor = RunCursor(score=last.submitted_at, run_id=last.id)
        return page, cursor

    def _older(self, key: str, cursor: RunCursor | None, count: int) -> list[tuple[str, float]]:
        """(run id, score) of up to ``count`` runs after ``cursor`` in newest-first order.

        Ties on the score (two submissions in one microsecond) are ordered by id
        descending, as ZREVRANGEBYSCORE returns them, and skipped past the cursor.
        """
        top = "+inf" if cursor is None else repr(cursor.score)
        offset = 0
        while True:
            with _wrapped():
                rows = self.r.zrevrangebyscore(
                    key, top, "-inf", start=offset, num=count, withscores=True
                )
            entries = [(m.decode(), float(sc)) for m, sc in rows]
            if cursor is not None:
                entries = [
                    (i, sc)
                    for i, sc in entries
                    if sc < cursor.score or (sc == cursor.score and i < cursor.run_id)
                ]
            if entries or len(rows) < count:
                return entries
            offset += count  # a whole batch of ties at the cursor's score: read further

    def active_run_ids(self) -> list[str]:
        with _wrapped():
            return sorted(i.decode() for i in self.r.smembers(self.key("active")))

    def find_runs(self, run_ids: list[str]) -> list[Run]:
        """Many runs in one round trip; missing ones are left out."""
        return self._load_many(Run, [self.key("run", i) for i in run_ids])

    def active_runs_of(self, configuration_type: str) -> list[Run]:
        """The active runs of one configuration type (``service``, ``dev-environment``).

        Beat's service and dev-environment tasks run every few seconds. With 10,000
        tasks queued, reading every active record to find the few services was a fifth
        of a worker's CPU (py-spy, bench peers), even decoding only each record's type.
        A run's type never changes, so each is read once per process (msgspec, skipping
        the rest of the record) and remembered while the run is active; only the
        matches are read whole."""
        ids = self.active_run_ids()
        with self._run_types_lock:
            types = self._run_types
            unknown = [i for i in ids if i not in types]
            for i, data in zip(unknown, self._stored_data("run", unknown), strict=True):
                if data is not None:
                    types[i] = _RUN_TYPE.decode(data).configuration_type
            for ended in types.keys() - set(ids):
                del types[ended]
            matching = [i for i in ids if types.get(i) == configuration_type]
        return self._load_many(Run, [self.key("run", i) for i in matching])

    def jobs_of_runs(self, runs: list[Run]) -> dict[str, list[Job]]:
        """Every job of ``runs`` in one round trip, by run id."""
        jobs = self._load_many(Job, [self.key("job", j) for r in runs for j in r.job_ids])
        by_run: dict[str, list[Job]] = {r.id: [] for r in runs}
        for job in jobs:
            by_run.setdefault(job.run_id, []).append(job)
        return by_run

    def find_jobs(self, job_ids: list[str]) -> list[Job]:
        """Many jobs in one round trip; missing ones are left out."""
        return self._load_many(Job, [self.key("job", i) for i in job_ids])

    def job_states(self, job_ids: list[str]) -> dict[str, RunStatus]:
        """Job id -> its status, for jobs that exist; each record's status alone is decoded
        (the orphan reaper asks about every ended pod's job, thousands every pass)."""
        return {
            job_id: RunStatus(_JOB_STATUS.decode(data).status)
            for job_id, data in zip(job_ids, self._stored_data("job", job_ids), strict=True)
            if data is not None
        }

    def _stored_data(self, kind: str, ids: list[str]) -> list[bytes | None]:
        """Each record's stored JSON (None where it is missing), in one round trip, for
        callers that decode only a field of it."""
        if not ids:
            return []
        with _wrapped():
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hget(self.key(kind, i), "d")
            rows: list[bytes | None] = pipe.execute()
        return rows

    def find_job(self, job_id: str) -> Job | None:
        return self._load(Job, self.key("job", job_id))

    def get_job(self, job_id: str) -> Job:
        job = self.find_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job

    def jobs_of(self, run: Run) -> list[Job]:
        """The run's jobs (one round trip), in its order; missing ones are left out."""
        return self.find_jobs(run.job_ids)

    def save_run(self, run: Run, event: Event | None = None) -> bool:
        """Compare-and-set: write ``run`` if the stored version is still ``run.version``.

        On success ``run.version`` is bumped in place and True returned; on a lost
        race nothing is written and False returned (the caller reloads or gives up).
        """
        ok = self._save(self.key("run", run.id), run, run.id, event)
        if ok and run.status.is_finished:
            with _wrapped():
                changes.leave_active(self.r, self.key, run.id)
        return ok

    def save_job(self, job: Job, event: Event | None = None) -> bool:
        """Compare-and-set for a job; its event goes to its run's log."""
        return self._save(self.key("job", job.id), job, job.run_id, event)

    def add_jobs(self, run: Run, jobs: list[Job], event: Event | None = None) -> bool:
        """Compare-and-set ``run`` (its ``job_ids`` already naming ``jobs``) and create ``jobs``.

        One transaction: the jobs exist exactly when the run lists them (a service
        scaling up). False, with nothing written, when the run changed meanwhile.
        """
        key = self.key("run", run.id)
        with _wrapped(), self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if self.r.hget(key, "v") != str(run.version).encode():  # watched from here
                    return False
                saved = run.model_copy(
                    update={"version": run.version + 1, "updated_at": time.time()}
                )
                pipe.multi()
                pipe.hset(key, mapping={"v": saved.version, "d": saved.model_dump_json()})
                for job in jobs:
                    pipe.hset(
                        self.key("job", job.id),
                        mapping={"v": job.version, "d": job.model_dump_json()},
                    )
                if event is not None:
                    pipe.xadd(
                        self.key("events", run.id),
                        {"e": event.model_dump_json()},
                        maxlen=_EVENTS_MAX,
                    )
                changes.note_in(pipe, self.key, self._record_keys(run.id, [j.id for j in jobs]))
                pipe.execute()
            except redis.WatchError:
                return False
        run.version, run.updated_at = saved.version, saved.updated_at
        self._confirm_state_change(run)
        return True

    def delete_run(self, run: Run) -> None:
        with _wrapped():
            pipe = self.r.pipeline(transaction=True)
            self._delete_run_in(pipe, run)
            pipe.execute()
            # Only drop the name if it still points at this run.
            name_key = self.key("runname", run.project, run.name)
            if self.r.get(name_key) == run.id.encode():
                self.r.delete(name_key)

    def _delete_run_in(self, pipe: redis.client.Pipeline[bytes], run: Run) -> None:
        pipe.delete(self.key("run", run.id), self.key("events", run.id))
        for job_id in run.job_ids:
            pipe.delete(self.key("job", job_id))
        pipe.zrem(self.key("runs", run.project), run.id)
        pipe.srem(self.key("active"), run.id)
        changes.note_in(pipe, self.key, self._record_keys(run.id, run.job_ids))

    def _record_keys(self, run_id: str, job_ids: list[str]) -> list[str]:
        return [self.key("run", run_id), *(self.key("job", j) for j in job_ids)]

    # -- events --------------------------------------------------------------

    def events(
        self, run_id: str, *, after: str = "-", count: int = 1000
    ) -> list[tuple[str, Event]]:
        """Events after the stream id ``after`` (exclusive), oldest first."""
        start = "-" if after == "-" else f"({after}"
        with _wrapped():
            rows = self.r.xrange(self.key("events", run_id), min=start, count=count)
        return [(i.decode(), Event.model_validate_json(f[b"e"])) for i, f in rows]

    def append_event(self, run_id: str, event: Event) -> None:
        with _wrapped():
            self.r.xadd(
                self.key("events", run_id), {"e": event.model_dump_json()}, maxlen=_EVENTS_MAX
            )

    # -- fleets --------------------------------------------------------------

    def put_fleet(self, fleet: Fleet) -> None:
        with _wrapped():
            self.r.set(self.key("fleet", fleet.project, fleet.name), fleet.model_dump_json())

    def get_fleet(self, project: str, name: str) -> Fleet | None:
        with _wrapped():
            raw = self.r.get(self.key("fleet", project, name))
        return Fleet.model_validate_json(raw) if raw else None

    def list_fleets(self, project: str) -> list[Fleet]:
        with _wrapped():
            keys = sorted(self.r.scan_iter(self.key("fleet", project, "*"), count=500))
            raws = self.r.mget(keys) if keys else []
        return [Fleet.model_validate_json(r) for r in raws if r]

    def delete_fleet(self, project: str, name: str) -> bool:
        with _wrapped():
            return bool(self.r.delete(self.key("fleet", project, name)))

    # -- volumes -------------------------------------------------------------

    def create_volume(self, volume: Volume) -> bool:
        """Record ``volume`` unless one of that name exists; False if it did."""
        with _wrapped():
            key = self.key("volume", volume.project, volume.name)
            return bool(self.r.set(key, volume.model_dump_json(), nx=True))

    def get_volume(self, project: str, name: str) -> Volume | None:
        with _wrapped():
            raw = self.r.get(self.key("volume", project, name))
        return Volume.model_validate_json(raw) if raw else None

    def list_volumes(self, project: str) -> list[Volume]:
        with _wrapped():
            keys = sorted(self.r.scan_iter(self.key("volume", project, "*"), count=500))
            raws = self.r.mget(keys) if keys else []
        return [Volume.model_validate_json(r) for r in raws if r]

    def delete_volume(self, project: str, name: str) -> bool:
        with _wrapped():
            return bool(self.r.delete(self.key("volume", project, name)))

    # -- plain JSON blobs (inventory snapshots, health) -----------------------

    def put_blob(self, name: str, value: dict[str, Any]) -> None:
        with _wrapped():
            self.r.set(self.key("blob", name), json.dumps(value))

    def get_blob(self, name: str) -> dict[str, Any] | None:
        with _wrapped():
            raw = self.r.get(self.key("blob", name))
        return json.loads(raw) if raw else None

    # -- the live inventory (published by the proxy worker) -------------------

    def publish_inventory(self, cluster_key: str, snapshot_json: str, channel: str) -> None:
        """Store the snapshot and announce it, in one round trip."""
        with _wrapped():
            pipe = self.r.pipeline()
            pipe.set(self.key("inventory", cluster_key), snapshot_json)
            pipe.incr(self.key("inventory-version", cluster_key))
            pipe.hset(self.key("inventory-published"), cluster_key, str(time.time()))
            pipe.publish(self.key(channel), cluster_key)
            pipe.execute()

    def inventory_published(self) -> dict[str, float]:
        """When each cluster's inventory was last published (epoch seconds)."""
        with _wrapped():
            raw = self.r.hgetall(self.key("inventory-published"))
        return {k.decode(): float(v) for k, v in raw.items()}

    def inventory_json(self, cluster_key: str) -> bytes | None:
        with _wrapped():
            return self.r.get(self.key("inventory", cluster_key))

    def inventory_if_changed(self, cluster_key: str, known: str | None) -> tuple[str, bytes | None]:
        """The snapshot's version, and the snapshot unless its version is ``known``.

        Version ``"0"`` is a snapshot published without one (an older proxy worker
        during an upgrade): it always comes back whole, for the caller to compare.
        """
        keys = [self.key("inventory-version", cluster_key), self.key("inventory", cluster_key)]
        with _wrapped():
            reply = self._inventory_if_changed(keys=keys, args=[known or ""])
        version = reply[0].decode()
        return version, (reply[1] if len(reply) > 1 else None)

    # -- counters and claims (coordination between workers) --------------------

    def incr(self, key: str) -> int:
        with _wrapped():
            return int(self.r.incr(key))

    def counter(self, key: str) -> int:
        with _wrapped():
            raw = self.r.get(key)
        return int(raw) if raw else 0

    def claim(self, key: str, holder: str, *, ttl_s: int, renew: bool = False) -> bool:
        """Take ``key`` for ``holder`` (or, with ``renew``, extend it if still ours)."""
        with _wrapped():
            if renew:
                return bool(self._renew(keys=[key], args=[holder, ttl_s * 1000]))
            return bool(self.r.set(key, holder, nx=True, px=ttl_s * 1000))

    def held(self, key: str) -> bool:
        """Whether someone holds claim ``key`` now."""
        with _wrapped():
            return bool(self.r.exists(key))

    def release(self, key: str, holder: str) -> None:
        """Drop ``key`` only if ``holder`` still has it."""
        with _wrapped():
            self._release(keys=[key], args=[holder])

    def mark_queued(self, wanted: list[tuple[str, str]], *, ttl_s: int) -> list[bool]:
        """For each (task, id), whether no message of it is already marked as queued.

        A true answer also marks it, for ``ttl_s`` or until the task starts
        (:meth:`unmark_queued`). Beat's safety-net resends go through this: with
        workers down, a resend every few seconds per job would otherwise pile
        up tens of thousands of identical messages for the survivors to chew
        through. The TTL bounds how long a lost message can hide a needed one.
        """
        if not wanted:
            return []
        with _wrapped():
            pipe = self.r.pipeline(transaction=False)
            for name, ident in wanted:
                pipe.set(self.key("queued", name, ident), "1", nx=True, ex=ttl_s)
            return [bool(ok) for ok in pipe.execute()]

    def unmark_queued(self, name: str, ident: str) -> None:
        """The task started: from now on a new message is needed to see new state."""
        with _wrapped():
            self.r.delete(self.key("queued", name, ident))

    # -- internals -----------------------------------------------------------

    def _load(self, model: type[M], key: str) -> M | None:
        with _wrapped():
            version, data = self.r.hmget(key, ["v", "d"])
        if data is None or version is None:
            return None
        obj = model.model_validate_json(data)
        obj.version = int(version)
        return obj

    def _load_many(
        self, model: type[M], keys: list[str], *, wanted: Callable[[bytes], bool] | None = None
    ) -> list[M]:
        if len(keys) <= 1 and wanted is None:  # a pipeline's bookkeeping costs more than it saves
            found = self._load(model, keys[0]) if keys else None
            return [found] if found is not None else []
        with _wrapped():
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, ["v", "d"])
            rows = pipe.execute()
        out = []
        for version, data in rows:
            if data is None or version is None or (wanted is not None and not wanted(data)):
                continue
            obj = model.model_validate_json(data)
            obj.version = int(version)
            out.append(obj)
        return out

    def _save(self, key: str, obj: Run | Job, run_id: str, event: Event | None) -> bool:
        expected = obj.version
        obj.version = expected + 1
        obj.updated_at = time.time()
        with _wrapped():
            ok = self._cas(
                keys=[key, self.key("events", run_id), *changes.log_keys(self.key)],
                args=[
                    str(expected),
                    str(obj.version),
                    obj.model_dump_json(),
                    event.model_dump_json() if event else "",
                ],
            )
        if not ok:
            obj.version = expected
            return False
        self._confirm_state_change(obj)
        return True

    def _confirm_state_change(self, obj: Run | Job) -> None:
        """A worker acts on the state it has just written (creates a pod, deletes one):
        it must not act on a write a failover could take back. On ReplicationError the
        write stays on the primary, the caller's task fails and retries, and whoever
        acts next reads that state again; a lost write is redone level-triggered, and
        Kubernetes objects have deterministic names, so acting twice creates nothing
        twice."""
        self.confirm_replicated(f"{type(obj).__name__.lower()} {obj.id}'s state change")


class _RunType(msgspec.Struct):
    """Just a stored run's type: msgspec skips the rest of the record unread."""

    configuration_type: str = ""


_RUN_TYPE = msgspec.json.Decoder(_RunType)


class _JobStatus(msgspec.Struct):
    """Just a stored job's status (absent: the model's default)."""

    status: str = RunStatus.SUBMITTED.value


_JOB_STATUS = msgspec.json.Decoder(_JobStatus)


@contextmanager
def _wrapped() -> Iterator[None]:
    try:
        yield
    except MasterNotFoundError as e:
        raise StoreError(f"Redis failed: {redis_client.no_primary(e)}") from None
    except redis.AuthenticationError as e:
        raise StoreError(f"Redis refused the password in redis.url: {e}") from e
    except redis.RedisError as e:
        raise StoreError(f"Redis failed: {e}") from e


# For modules that keep their own keys through ``Store.r``: Redis errors become StoreError.
wrapped = _wrapped
