"""A leader lease in Redis: one active process of a kind (proxy worker, log collector).

Standbys poll :meth:`Lease.acquire`; the leader renews well inside the TTL and
steps down when it cannot, so a dead leader is replaced within ``LEASE_TTL_S``
and two never lead at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared import startup_heap
from shared.settings import Settings
from shared.state.store import Store

log = logging.getLogger(__name__)

LEASE_TTL_S = 10  # a dead leader is replaced within this
LEASE_RENEW_S = 3  # renew well inside the TTL, tolerating one slow Redis round trip
LEASE_MARGIN_S = 1.0  # stop leading this long before the lease could lapse (clock skew, GC)


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


@dataclass(frozen=True)
class Term:
    """One term of leadership: what ``run_as_leader`` gives its ``lead``."""

    name: str
    settings: Settings
    store: Store
    lease: Lease
    stop: threading.Event

    def started(self) -> None:
        """The leader has built what it keeps: in a ``berth`` process (not a test's)
        that is kept out of later garbage collections (shared/startup_heap.py), at the
        first term only."""
        startup_heap.freeze(f"the {self.name.replace('-', ' ')}'s start")


def run_as_leader(
    settings: Settings,
    name: str,
    lead: Callable[[Term], None],
    *,
    stop: threading.Event | None = None,
) -> None:
    """Stand by, lead while holding lease ``name`` (``lead`` returns when it is lost),
    and back, until SIGTERM/SIGINT (or ``stop``). A leader that cannot renew goes back
    to standby instead of exiting, so a lone process recovers once Redis is back."""
    stop = stop or stop_on_signals()
    store = Store.from_settings(settings.redis)
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    lease = Lease(store, name=name, holder=holder)
    try:
        while not stop.is_set():
            if lease.acquire():
                log.info("%s is the leader (%s)", name.replace("-", " "), holder)
                lead(Term(name, settings, store, lease, stop))
            else:
                stop.wait(LEASE_RENEW_S)  # standby: take over when the leader's lease expires
    finally:
        store.close()


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: how a leader process is asked to stop."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
