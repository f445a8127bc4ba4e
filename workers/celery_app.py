"""The workers' Celery app and the one way Berth defines a task.

Every task: an explicit stable name, ids-only JSON payloads, ``acks_late``
with ``reject_on_worker_lost`` (a killed worker's message is redelivered),
bounded retries with exponential backoff on :class:`TemporaryError`, and no
result backend. Tasks are thin: they call one plain function and return.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery
from celery.signals import worker_ready

from shared import logs
from shared.errors import TemporaryError
from shared.metrics import TASKS
from shared.settings import load_settings
from shared.state.usage import USAGE_EVERY_S
from shared.tasks import (
    CHECK_ACTIVITY,
    CHECK_UTILIZATION,
    EXPIRE_RUNS,
    KEEP_FLEETS_WARM,
    QUEUE_OF,
    REAP_ORPHANS,
    SAMPLE_USAGE,
    SCALE_SERVICES,
    START_SCHEDULED_RUNS,
    SWEEP,
    SYNC_ROUTERS,
    create_celery,
)
from workers.context import warm_up

F = TypeVar("F", bound=Callable[..., Any])

MAX_RETRIES = 8  # 1+2+4+...+60 s with jitter: several minutes of apiserver or Redis trouble
MAX_BACKOFF_S = 60  # stays far below the broker's visibility timeout

SWEEP_EVERY_S = 5.0  # beat's safety net; a lost message costs at most this much delay
# Orphans hold GPUs, but each reap lists every Berth object of the namespace.
REAP_EVERY_S = 30.0
# Retention is counted in days; every 10 minutes keeps a run at most that long past it.
EXPIRE_EVERY_S = 600.0
# Cron times are whole minutes: a start is at most this late, and a look costs one read.
SCHEDULES_EVERY_S = 10.0
# Services' replica counts follow their traffic: scaling delays are minutes by default,
# and a tick reads one counter per second of each scaled service's window.
SCALING_EVERY_S = 5.0
WARMTH_EVERY_S = 30.0  # fleet idle_duration: minutes-long clocks (workers/fleet_warmth.py)

_settings = load_settings()
app: Celery = create_celery(_settings)
app.conf.imports = ("workers.tasks",)
# Each task's queue by name (a task's own ``queue`` attribute is deprecated in Celery 5).
app.conf.task_routes = {name: {"queue": queue} for name, queue in QUEUE_OF.items()}
app.conf.beat_schedule = {
    "sweep": {"task": SWEEP, "schedule": SWEEP_EVERY_S, "options": {"queue": QUEUE_OF[SWEEP]}},
    "start-scheduled-runs": {
        "task": START_SCHEDULED_RUNS,
        "schedule": SCHEDULES_EVERY_S,
        "options": {"queue": QUEUE_OF[START_SCHEDULED_RUNS]},
    },
    "scale-services": {
        "task": SCALE_SERVICES,
        "schedule": SCALING_EVERY_S,
        "options": {"queue": QUEUE_OF[SCALE_SERVICES]},
    },
    "check-utilization": {
        "task": CHECK_UTILIZATION,
        "schedule": _settings.gpu_metrics.check_interval_s,
        "options": {"queue": QUEUE_OF[CHECK_UTILIZATION]},
    },
    "sync-routers": {
        "task": SYNC_ROUTERS,
        "schedule": SCALING_EVERY_S,
        "options": {"queue": QUEUE_OF[SYNC_ROUTERS]},
    },
    "reap-orphans": {
        "task": REAP_ORPHANS,
        "schedule": REAP_EVERY_S,
        "options": {"queue": QUEUE_OF[REAP_ORPHANS]},
    },
    "sample-usage": {
        "task": SAMPLE_USAGE,
        "schedule": USAGE_EVERY_S,
        "options": {"queue": QUEUE_OF[SAMPLE_USAGE]},
    },
    "expire-runs": {
        "task": EXPIRE_RUNS,
        "schedule": EXPIRE_EVERY_S,
        "options": {"queue": QUEUE_OF[EXPIRE_RUNS]},
    },
    "keep-fleets-warm": {
        "task": KEEP_FLEETS_WARM,
        "schedule": WARMTH_EVERY_S,
        "options": {"queue": QUEUE_OF[KEEP_FLEETS_WARM]},
    },
    "check-activity": {
        "task": CHECK_ACTIVITY,
        "schedule": _settings.ssh.activity_interval_s,
        "options": {"queue": QUEUE_OF[CHECK_ACTIVITY]},
    },
}


def _warm_up(**_: Any) -> None:
    """A worker (never beat) connects its clusters as it starts, not in its first pass."""
    warm_up()


worker_ready.connect(_warm_up, weak=False)


def berth_task(name: str) -> Callable[[F], F]:
    """Register ``fn`` as the Berth task ``name``, on the queue that name belongs to."""

    def decorate(fn: F) -> F:
        arg = next(iter(inspect.signature(fn).parameters), None)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            ids = {arg: args[0]} if args and arg in ("run_id", "job_id") else {}
            with logs.context(run=ids.get("run_id"), job=ids.get("job_id")):
                try:
                    result = fn(*args, **kwargs)
                except Exception:
                    TASKS.labels(name, "error").inc()
                    raise
                TASKS.labels(name, "ok").inc()
                return result

        task: F = app.task(
            name=name,
            autoretry_for=(TemporaryError,),
            retry_backoff=True,
            retry_backoff_max=MAX_BACKOFF_S,
            retry_jitter=True,
            max_retries=MAX_RETRIES,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(run)
        return task

    return decorate
