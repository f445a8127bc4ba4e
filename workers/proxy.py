"""The dedicated proxy worker process: one active per installation.

It holds a Redis lease (standbys wait for it), watches every cluster named in
the server config and publishes its GPU inventory, and applies each state of
Berth's own pods to its job as the watch sees it (:mod:`workers.pod_follow`),
so job states follow pods within moments, without a task or a read per pod
event. The SSH jump host lives here too.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import kombu.exceptions
import redis
from celery import Celery

from shared.clusters import ClusterRegistry
from shared.configuration.server import load_server_config
from shared.errors import BerthError, TemporaryError
from shared.gpu.inventory import GpuInventory
from shared.queueing.wake import wake_scheduler
from shared.settings import Settings
from shared.state.inventory_store import CHANNEL
from shared.state.store import Store
from shared.tasks import create_celery
from workers.backend_watches import BackendWatches
from workers.cluster_health import HealthProbe
from workers.context import WorkerContext
from workers.jumphost import JumpHostSupervisor
from workers.lease import LEASE_RENEW_S, Term, run_as_leader
from workers.pod_follow import PodFollower, mark_following, stop_following

log = logging.getLogger(__name__)


def run_proxy_worker(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set): standby, leader, and back.

    A leader that cannot renew its lease (Redis away longer than the TTL) stops
    leading and goes back to standby instead of exiting, so a lone proxy worker
    recovers by itself once Redis is back, and two never lead at once.
    """
    run_as_leader(settings, "proxy-worker", _lead, stop=stop)


def _lead(term: Term) -> None:
    """Watch, publish and keep the jump hosts while the lease holds."""
    settings, store, lease, stop = term.settings, term.store, term.lease, term.stop
    server = load_server_config(settings.server_config_path)
    clusters = ClusterRegistry(
        server,
        request_timeout_s=settings.kube.request_timeout_s,
        exec_timeout_s=settings.kube.exec_timeout_s,
    )
    celery = create_celery(settings)
    jump_hosts = JumpHostSupervisor(settings.ssh, server, clusters, store)

    def publish(key: str, inv: GpuInventory) -> None:
        store.publish_inventory(key, inv.to_json(), CHANNEL)
        # Capacity changed: pending runs may fit now (passes coalesce).
        _wake(store, celery, f"inventory:{key}")

    ctx = WorkerContext(
        settings=settings, store=store, server=server, clusters=clusters, celery=celery
    )
    follower = PodFollower(ctx)
    # What each backend may be watched for follows its access mode (shared/policy/access.py).
    watches = BackendWatches(
        settings, store, clusters, publish=publish, on_berth_pod=follower.offer
    )
    health = HealthProbe(store, watches.clients)
    try:
        follower.start()
        watches.refresh()
        _say_following(store)
        term.started()
        # The SSH jump hosts: their own thread and asyncio loop (workers/jumphost.py),
        # so a slow cluster never delays the renewals below.
        jump_hosts.start()
        # Which apiservers answer, for the scheduler (its own thread: a probe may wait).
        health.start()
        while not stop.wait(LEASE_RENEW_S):
            if not lease.renew():
                log.error("lost the proxy worker lease; back to standby")
                return
            _say_following(store)
            _refresh(watches)
    finally:
        health.stop()
        jump_hosts.stop()
        watches.stop()
        follower.stop()
        with contextlib.suppress(BerthError):
            stop_following(store)  # the sweep syncs every job again at once
        lease.release()
        clusters.close()
        celery.close()


def _wake(store: Store, celery: Celery, reason: str) -> None:
    """Ask for a pass; if the broker is down, beat's sweep catches up once it is back."""
    try:
        wake_scheduler(store, celery, reason)
    except (kombu.exceptions.KombuError, redis.RedisError, OSError) as e:
        raise TemporaryError(f"cannot ask for a scheduling pass: {e}") from e


def _say_following(store: Store) -> None:
    try:
        mark_following(store)
    except BerthError as e:  # the sweep then syncs every job, as without a proxy worker
        log.warning("could not say the pod watches follow jobs: %s", e)


def _refresh(watches: BackendWatches) -> None:
    """Follow access changes; Redis away for a moment is no reason to stop leading."""
    try:
        watches.refresh()
    except BerthError as e:
        log.warning("could not refresh the watches: %s", e)
