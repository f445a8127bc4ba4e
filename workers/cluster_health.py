"""Which clusters' apiservers answer, as the proxy worker finds them, for the scheduler.

A project's runs may go to any of its clusters (:mod:`workers.cluster_routes`). While
one apiserver is away, its last published inventory still shows free GPUs, and a
pass would place runs there that cannot start until it is back, though another
cluster could start them now. So the proxy worker asks each cluster it watches for
its version (any authenticated client may) every ``PROBE_EVERY_S``, in a thread of
its own since an apiserver that does not answer costs the client's timeout, and
keeps their marks in Redis (:mod:`shared.state.cluster_health`), which the scheduler
reads once per pass.

An apiserver that answers at all (even 403, or 500) is reachable: only a request
that gets no answer marks a cluster (:class:`~shared.errors.KubeTemporaryError`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from kubernetes import client

from shared import kube
from shared.errors import BerthError, KubeError, KubeTemporaryError
from shared.state import cluster_health as health
from shared.state.store import Store

log = logging.getLogger(__name__)

PROBE_EVERY_S = 5.0

Targets = Callable[[], dict[str, kube.Kube]]
"""Cluster key -> a client of it: what to probe now."""


def probe_once(store: Store, targets: dict[str, kube.Kube], *, now: float | None = None) -> None:
    """Ask each cluster for its version; mark the ones that do not answer, clear the rest."""
    now = time.time() if now is None else now
    for cluster, k in targets.items():
        try:
            k.call(client.VersionApi(k.api).get_code)
        except KubeTemporaryError as e:
            if health.mark_unreachable(store, cluster, e.message, now=now):
                log.warning("cluster %s does not answer: %s", cluster, e.message)
            continue
        except KubeError:
            pass  # it answered: reachable, whatever it said
        if health.mark_reachable(store, cluster):
            log.info("cluster %s answers again", cluster)


class HealthProbe:
    """``probe_once`` every ``PROBE_EVERY_S`` on a thread of its own until stopped."""

    def __init__(self, store: Store, targets: Targets, *, every_s: float = PROBE_EVERY_S) -> None:
        self._store = store
        self._targets = targets
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                probe_once(self._store, self._targets())
            except (BerthError, redis.RedisError) as e:  # Redis away: the next probe writes
                log.warning("could not record which clusters answer: %s", e)
            except Exception:  # a bug must not end the probe thread
                log.exception("cluster health probe failed")
            self._stop.wait(self._every)
