"""The dedicated proxy worker process: one active per installation.

It holds a Redis lease (standbys wait for it), watches every cluster named in
the server config and publishes its GPU inventory, and turns events on
Berth's own pods into ``sync_job`` tasks so job states follow pods within
moments instead of waiting for beat's sweep. The SSH jump host lives here too.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time

import kombu.exceptions
import redis
from celery import Celery

from shared import tasks
from shared.clusters import ClusterRegistry
from shared.configuration.server import load_server_config
from shared.errors import BerthError, TemporaryError
from shared.gpu.inventory import GpuInventory
from shared.inventory_store import CHANNEL
from shared.settings import Settings
from shared.store import Store
from shared.tasks import create_celery
from workers.backend_watches import BackendWatches
from workers.jumphost import JumpHostSupervisor

log = logging.getLogger(__name__)

LEASE_TTL_S = 10  # a dead leader is replaced within this
LEASE_RENEW_S = 3  # renew well inside the TTL, tolerating one slow Redis round trip
LEASE_MARGIN_S = 1.0  # stop leading this long before the lease could lapse (clock skew, GC)


def run_proxy_worker(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set): standby, leader, and back.

    A leader that cannot renew its lease (Redis away longer than the TTL) stops
    leading and goes back to standby instead of exiting, so a lone proxy worker
    recovers by itself once Redis is back, and two never lead at once.
    """
    stop = stop or _stop_on_signals()
    store = Store.connect(
        settings.redis.url,
        prefix=settings.redis.key_prefix,
        timeout_s=settings.redis.socket_timeout_s,
    )
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    lease = Lease(store, name="proxy-worker", holder=holder)
    try:
        while not stop.is_set():
            if lease.acquire():
                log.info("proxy worker is the leader (%s)", lease.holder)
                _lead(settings, store, lease, stop)
            else:
                stop.wait(LEASE_RENEW_S)  # standby: take over when the leader's lease expires
    finally:
        store.close()


def _lead(settings: Settings, store: Store, lease: Lease, stop: threading.Event) -> None:
    """Watch, publish and keep the jump hosts while the lease holds."""
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
        _send(celery, tasks.SCHEDULE_RUN, f"inventory:{key}")

    def on_berth_pod(job_id: str, _event: str) -> None:
        _send(celery, tasks.SYNC_JOB, job_id)

    # What each backend may be watched for follows its access mode (shared/access.py).
    watches = BackendWatches(settings, store, clusters, publish=publish, on_berth_pod=on_berth_pod)
    try:
        watches.refresh()
        # The SSH jump hosts: their own thread and asyncio loop (workers/jumphost.py),
        # so a slow cluster never delays the renewals below.
        jump_hosts.start()
        while not stop.wait(LEASE_RENEW_S):
            if not lease.renew():
                log.error("lost the proxy worker lease; back to standby")
                return
            _refresh(watches)
    finally:
        jump_hosts.stop()
        watches.stop()
        lease.release()
        clusters.close()
        celery.close()


class Lease:
    """A Redis key with a TTL that only its holder may renew or release."""

    _RENEW = (
        "if redis.call('GET', KEYS[1]) == ARGV[1] then "
        "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
    )
    _RELEASE = (
        "if redis.call('GET', KEYS[1]) == ARGV[1] then "
        "return redis.call('DEL', KEYS[1]) else return 0 end"
    )

    def __init__(self, store: Store, *, name: str, holder: str) -> None:
        self.store = store
        self.key = store.key("lease", name)
        self.holder = holder
        self._held_since = 0.0
        """Monotonic time of the last successful acquire or renewal."""
        self._renew = store.r.register_script(self._RENEW)
        self._release = store.r.register_script(self._RELEASE)

    def acquire(self) -> bool:
        started = time.monotonic()
        try:
            ok = bool(self.store.r.set(self.key, self.holder, nx=True, px=LEASE_TTL_S * 1000))
        except redis.RedisError as e:  # Redis down: stay standby and retry
            log.warning("lease acquire failed: %s", e)
            return False
        if ok:
            self._held_since = started
        return ok

    def renew(self) -> bool:
        """Extend the lease; False once it may have lapsed (stop leading then).

        Retries a Redis blip only while the lease surely still holds: until one
        second before the TTL runs out, counted from the last success. After
        that a standby may lead, so this one must not.
        """
        deadline = self._held_since + LEASE_TTL_S - LEASE_MARGIN_S
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                ok = bool(self._renew(keys=[self.key], args=[self.holder, LEASE_TTL_S * 1000]))
            except redis.RedisError as e:
                log.warning("lease renew failed: %s", e)
                time.sleep(0.5)
                continue
            if ok:
                self._held_since = started
            return ok
        return False

    def release(self) -> None:
        try:
            self._release(keys=[self.key], args=[self.holder])
        except redis.RedisError as e:  # it expires by itself anyway
            log.warning("lease release failed: %s", e)


def _send(celery: Celery, name: str, arg: str) -> None:
    """Send a wake-up; if the broker is down, beat's sweep catches up once it is back."""
    try:
        tasks.send(celery, name, arg)
    except (kombu.exceptions.KombuError, redis.RedisError, OSError) as e:
        raise TemporaryError(f"cannot send {name}: {e}") from e


def _refresh(watches: BackendWatches) -> None:
    """Follow access changes; Redis away for a moment is no reason to stop leading."""
    try:
        watches.refresh()
    except BerthError as e:
        log.warning("could not refresh the watches: %s", e)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
