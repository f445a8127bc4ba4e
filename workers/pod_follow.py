"""Jobs follow their pods in the proxy worker: the watched pod is applied, not re-read.

The proxy worker's pod watch already holds every state a job's pod goes
through. Sending a ``sync_job`` task per pod event (several per pod: created,
bound, running, ended) cost a broker round trip, a worker thread, a GET of the
pod and the job's Redis reads each time; in a burst of 500 runs that was most
of the worker's work and a good share of the apiserver's. Here each event
becomes :func:`workers.provisioning.apply_pod` on the pod as watched:

* **Latest state wins.** Events are kept per job, newest replacing older ones
  not yet applied, so a burst of events for one job costs one application.
* **One job at a time, several jobs at once.** A job is never applied on two
  threads together (its events stay in order); ``threads`` jobs proceed side by
  side, since each application is mostly Redis round trips.
* **Nothing is lost by failing here.** An application that fails (Redis away,
  a bug) falls back to a ``sync_job`` task, and beat's sweep re-syncs every
  placed job anyway; every write is compare-and-set, so applying a state twice,
  or late, moves nothing backwards.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from shared import tasks
from shared.errors import BerthError
from shared.state.store import Store, wrapped
from workers import provisioning
from workers.context import WorkerContext
from workers.inventory_watch import WatchedPod

log = logging.getLogger(__name__)

DELETED = "DELETED"


Apply = Callable[[str, Any, bool], None]
"""(job id, pod, deleted): what :class:`PodFollower` does with each job's latest state."""


class PodFollower:
    """Applies watched pods to their jobs on a few threads, latest state per job."""

    def __init__(self, ctx: WorkerContext, *, threads: int = 4, apply: Apply | None = None) -> None:
        self.ctx = ctx
        self._apply_one = apply or partial(_apply_pod, ctx)
        self._lock = threading.Condition()
        self._latest: dict[str, tuple[Any, bool]] = {}
        """Job id -> (pod, deleted) not applied yet."""
        self._ready: deque[str] = deque()
        """Jobs with a state waiting and no thread on them, in arrival order."""
        self._busy: set[str] = set()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"pod-follow-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def offer(self, job_id: str, event_type: str, pod: Any) -> None:
        """A watch saw ``pod`` (None: a relist no longer finds it) of job ``job_id``."""
        with self._lock:
            queued = job_id in self._latest
            self._latest[job_id] = (pod, event_type == DELETED or pod is None)
            if not queued and job_id not in self._busy:
                self._ready.append(job_id)
                self._lock.notify()

    def pending(self) -> int:
        """Jobs with a state not applied yet (for tests and health)."""
        with self._lock:
            return len(self._latest) + len(self._busy)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    return
                job_id = self._ready.popleft()
                pod, deleted = self._latest.pop(job_id)
                self._busy.add(job_id)
            try:
                self._apply(job_id, pod, deleted)
            finally:
                with self._lock:
                    self._busy.discard(job_id)
                    if job_id in self._latest:  # a newer state came while applying
                        self._ready.append(job_id)
                        self._lock.notify()

    def _apply(self, job_id: str, pod: Any, deleted: bool) -> None:
        try:
            self._apply_one(job_id, pod, deleted)
        except Exception as e:  # a guard: the thread must outlive one job's failure
            if isinstance(e, BerthError):
                log.warning("applying the pod of job %s failed; syncing it instead: %s", job_id, e)
            else:
                log.exception("applying the pod of job %s failed; syncing it instead", job_id)
            try:
                tasks.send(self.ctx.celery, tasks.SYNC_JOB, job_id)
            except Exception as sent:  # the broker too: beat's sweep syncs it
                log.warning("cannot send sync_job for %s either: %s", job_id, sent)


def _apply_pod(ctx: WorkerContext, job_id: str, pod: Any, deleted: bool) -> None:
    if isinstance(pod, WatchedPod):  # read whole only if the job still follows a pod
        provisioning.apply_watched_pod(ctx, job_id, pod.raw, deleted=deleted)
    else:
        provisioning.apply_pod(ctx, job_id, pod, deleted=deleted)


FOLLOWING_TTL_S = 10
"""The proxy worker says it follows pods this long at a time, seconds (renewed with its
lease, every 3 s): a dead one's word lapses within this, and the sweep syncs every job
again (beat's ``SWEEP_EVERY_S``)."""


def mark_following(store: Store) -> None:
    """The leading proxy worker's pod watches apply pod states to jobs (see the sweep)."""
    with wrapped():
        store.r.set(_following_key(store), "1", ex=FOLLOWING_TTL_S)


def is_following(store: Store) -> bool:
    with wrapped():
        return bool(store.r.exists(_following_key(store)))


def stop_following(store: Store) -> None:
    with wrapped():
        store.r.delete(_following_key(store))


def _following_key(store: Store) -> str:
    return store.key("proxy", "following-pods")
