"""Runs started by cron (dstack's ``schedule``): the record, its clock, its store keys.

**Design: a schedule is its own record, and each start is a new run.** ``berth
apply`` of a configuration with ``schedule`` keeps a :class:`ScheduledRun` (the
configuration, the submitter, the code) and starts nothing. Beat calls
:func:`workers.schedules.start_due_runs` every few seconds; a schedule whose
latest cron time has passed gets one run of its name, as if submitted then. A
finished run is final in Berth's state machine, so each start is a run of its own
(``berth ps -a`` lists them); the schedule stays until ``berth schedule delete``.

Rules, as dstack has them: cron times are UTC; if the previous run of the name is
still active at a cron time, that start is skipped (no overlap, no queue of
starts); cron times missed while Berth was down are not made up, only the latest.
**One run per tick:** the tick's start is claimed in Redis (``SET NX``) before the
run is made, so two beats, a redelivered task or a retry start it once.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Literal

from croniter import croniter
from pydantic import Field

from shared.errors import NotFoundError
from shared.state.records import Stored
from shared.state.store import Store, wrapped

TICK_CLAIM_TTL_S = 7 * 24 * 3600  # longer than any gap between two beats' looks at a tick


class ScheduledRun(Stored):
    project: str
    name: str
    user: str
    configuration: dict[str, object]
    """The validated configuration as JSON, ``schedule`` included."""
    configuration_type: str
    crons: list[str]
    code: str | None = None
    priority: int = 0
    pod_security: Literal["privileged", "baseline", "restricted"] = "privileged"
    created_at: float = Field(default_factory=time.time)
    last_tick: float | None = None
    """The latest cron time a run was started (or skipped) for."""


def next_start(crons: list[str], *, after: float) -> float:
    """The first cron time strictly after ``after`` (epoch seconds, UTC)."""
    start = datetime.fromtimestamp(after, tz=UTC)
    return min(croniter(c, start).get_next(float) for c in crons)


def due_tick(crons: list[str], *, since: float, now: float) -> float | None:
    """The latest cron time in ``(since, now]``, or None when none has come."""
    # Cron times are whole minutes: the latest one <= now is the one before floor(now) + 1.
    after = datetime.fromtimestamp(math.floor(now) + 1, tz=UTC)
    latest = max(croniter(c, after).get_prev(float) for c in crons)
    return latest if latest > since else None


def put(store: Store, record: ScheduledRun) -> None:
    with wrapped():
        pipe = store.r.pipeline(transaction=True)
        pipe.set(_key(store, record.project, record.name), record.model_dump_json())
        pipe.sadd(store.key("schedules"), f"{record.project}/{record.name}")
        pipe.execute()


def get(store: Store, project: str, name: str) -> ScheduledRun:
    with wrapped():
        raw = store.r.get(_key(store, project, name))
    if raw is None:
        raise NotFoundError(f"no schedule named {name!r} in project {project!r}", field="name")
    return ScheduledRun.model_validate_json(raw)


def list_all(store: Store, project: str | None = None) -> list[ScheduledRun]:
    with wrapped():
        members = sorted(m.decode() for m in store.r.smembers(store.key("schedules")))
        wanted = [m for m in members if project is None or m.split("/", 1)[0] == project]
        raws = store.r.mget([store.key("schedule", *m.split("/", 1)) for m in wanted])
    return [ScheduledRun.model_validate_json(raw) for raw in raws if raw is not None]


def delete(store: Store, project: str, name: str) -> bool:
    with wrapped():
        pipe = store.r.pipeline(transaction=True)
        pipe.delete(_key(store, project, name))
        pipe.srem(store.key("schedules"), f"{project}/{name}")
        removed, _ = pipe.execute()
    return bool(removed)


def claim_tick(store: Store, record: ScheduledRun, tick: float) -> bool:
    """True for the one caller that may act on ``tick`` of ``record`` (SET NX)."""
    key = store.key("schedule-tick", record.project, record.name, str(int(tick)))
    return store.claim(key, "1", ttl_s=TICK_CLAIM_TTL_S)


def _key(store: Store, project: str, name: str) -> str:
    return store.key("schedule", project, name)
