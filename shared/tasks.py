"""Task names, queues and the Celery configuration shared by senders and workers.

The API never imports ``workers``; it sends tasks by name with
:func:`send`. Payloads are ids only, so a message never carries a secret or a
stale object.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from celery import Celery
from kombu import Queue

from shared.errors import StoreError
from shared.settings import Settings
from shared.state import broker_transport, redis_client

if TYPE_CHECKING:
    from shared.state.store import Store

SCHEDULE_RUN = "berth.scheduling.schedule_run"
SWEEP = "berth.scheduling.sweep"
PROVISION_JOB = "berth.provisioning.provision_job"
PROVISION_JOBS = "berth.provisioning.provision_jobs"
SYNC_JOB = "berth.provisioning.sync_job"
TEARDOWN_JOB = "berth.teardown.teardown_job"
TEARDOWN_PENDING = "berth.teardown.teardown_pending"
TEARDOWN_POD = "berth.teardown.teardown_pod"
PURGE_RUN = "berth.teardown.purge_run"
REAP_ORPHANS = "berth.teardown.reap_orphans"
CHECK_ACTIVITY = "berth.teardown.check_activity"
EXPIRE_RUNS = "berth.teardown.expire_runs"
SAMPLE_USAGE = "berth.scheduling.sample_usage"
START_SCHEDULED_RUNS = "berth.scheduling.start_scheduled_runs"
SCALE_SERVICES = "berth.scheduling.scale_services"
SYNC_ROUTERS = "berth.provisioning.sync_routers"
CHECK_UTILIZATION = "berth.teardown.check_utilization"
KEEP_FLEETS_WARM = "berth.teardown.keep_fleets_warm"

QUEUES = ("scheduling", "provisioning", "teardown")
QUEUE_OF = {
    SCHEDULE_RUN: "scheduling",
    SWEEP: "scheduling",
    START_SCHEDULED_RUNS: "scheduling",
    SCALE_SERVICES: "scheduling",
    SYNC_ROUTERS: "provisioning",  # HTTP to routers through the apiserver: I/O
    CHECK_UTILIZATION: "teardown",  # exporters' metrics through the apiserver: I/O
    PROVISION_JOB: "provisioning",
    PROVISION_JOBS: "provisioning",
    SYNC_JOB: "provisioning",
    TEARDOWN_JOB: "teardown",
    TEARDOWN_PENDING: "teardown",
    TEARDOWN_POD: "teardown",
    PURGE_RUN: "teardown",
    REAP_ORPHANS: "teardown",
    EXPIRE_RUNS: "teardown",
    SAMPLE_USAGE: "scheduling",
    KEEP_FLEETS_WARM: "teardown",  # node reads and patches: Kubernetes I/O
    CHECK_ACTIVITY: "teardown",  # SSH logins: seconds of I/O, kept off the scheduling queue
}
# Redis redelivers an unacked message after the visibility timeout, so no
# countdown or ETA may exceed it (Celery issues #2481 and #3541).
VISIBILITY_TIMEOUT_S = 600


def create_celery(settings: Settings) -> Celery:
    """The Celery app as both the API (sending) and the workers (running) use it."""
    # A worker survives a lost broker (shared/state/broker_transport.py).
    broker_transport.register()
    # One Redis, or kombu's Sentinel transport (``redis_client.broker_url``): after a
    # failover, publishing and consuming fail with a connection error, and Celery's
    # publish retry and the worker's consumer restart reconnect through the Sentinels
    # to the new primary. A message the old primary took but never replicated is lost;
    # beat's sweep resends whatever a lost message leaves undone.
    app = Celery("berth", broker=redis_client.broker_url(settings.redis), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # long tasks must not sit behind a busy worker
        # No "task-sent" events: each would be a second Redis publish per task;
        # workers' received/started/succeeded events are what Flower shows.
        task_send_sent_event=False,
        worker_send_task_events=True,  # Flower shows live tasks
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_timeout": settings.redis.socket_timeout_s,
            "socket_connect_timeout": settings.redis.socket_timeout_s,
            "global_keyprefix": f"{settings.redis.key_prefix}:celery:",
            **redis_client.broker_transport_options(settings.redis),
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,  # keep Berth's structured handler (shared.logs)
        broker_connection_timeout=settings.redis.socket_timeout_s,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="scheduling",
        task_time_limit=300,  # a stuck task is cut; each Kubernetes call has its own timeout too
        task_soft_time_limit=240,
    )
    return app


def send(app: Celery, name: str, *ids: str, countdown: float | None = None) -> None:
    """Publish task ``name`` with id arguments on its own queue."""
    if countdown is not None and countdown >= VISIBILITY_TIMEOUT_S:
        raise ValueError("countdown must stay below the broker's visibility timeout")
    app.send_task(name, args=list(ids), queue=QUEUE_OF[name], countdown=countdown)


RESEND_HOLD_S = 60
"""How long a message marked queued (:func:`send_unqueued`) hides another like it: one
still queued after this is presumed lost (a broker restart), and beat sends it again."""


def send_unqueued(
    app: Celery, store: Store, wanted: list[tuple[str, str]], *, hold_s: int = RESEND_HOLD_S
) -> None:
    """Send each (task, id) unless one like it still waits in the queue
    (``Store.mark_queued``; the task unmarks it when it starts).

    Every sender of a message beat's sweep may also send goes through here: a stop of
    1,000 runs sent each job's teardown from the API, and the sweeps of the next half
    minute, seeing those jobs still terminating, sent each again (2,190 teardowns for
    1,000 jobs, each one more DELETE)."""
    wanted = list(dict.fromkeys(wanted))
    fresh = store.mark_queued(wanted, ttl_s=hold_s)
    to_send = [item for item, needed in zip(wanted, fresh, strict=True) if needed]
    for i, (name, ident) in enumerate(to_send):
        try:
            send(app, name, ident)
        except Exception:
            # The broker refused: what was not sent must not look queued until its hold ends.
            for unsent_name, unsent_id in to_send[i:]:
                with contextlib.suppress(StoreError):
                    store.unmark_queued(unsent_name, unsent_id)
            raise
