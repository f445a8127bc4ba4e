"""Reading a namespace's ResourceQuotas: once per submission, cached for scheduling passes.

The arithmetic is :mod:`shared.queueing.namespace_quota`; this module only reads.

- :func:`read_quotas` is one LIST with the client's timeout. The API calls it
  for each submission and plan (a refusal names the quota at once).
- :class:`QuotaReader` serves the scheduling passes: a read is kept for
  ``quota_ttl_s`` (a pass every few hundred milliseconds in a burst costs one
  LIST per TTL, not one per pass), and dropped early when a worker was refused a
  pod for a quota since (:func:`note_refusal`), so the next pass sees the
  namespace as the apiserver does. A ServiceAccount that may not list
  resourcequotas (403) is remembered and asked again only every
  ``forbidden_recheck_s``: meanwhile Berth places as if there were no quota,
  and a pod refused for one simply waits (see :mod:`workers.provisioning`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.clusters import Cluster
from shared.errors import KubeError, KubeForbidden
from shared.queueing import keys
from shared.queueing.namespace_quota import NamespaceQuota, quota_from_kube
from shared.state.store import Store

log = logging.getLogger(__name__)

QUOTA_REFUSED = "quota-refused"
"""``P:queue:quota-refused``: hash namespace key -> when a pod was last refused for quota."""


def read_quotas(cluster: Cluster) -> tuple[NamespaceQuota, ...]:
    """The capacity quotas of the cluster's namespace; KubeForbidden if RBAC says no."""
    k = cluster.kube
    listed = k.call(k.core.list_namespaced_resource_quota, cluster.namespace)
    found = (quota_from_kube(item) for item in listed.items or [])
    return tuple(sorted((q for q in found if q is not None), key=lambda q: q.name))


def namespace_key(cluster_key: str, namespace: str) -> str:
    return f"{cluster_key}/{namespace}"


def note_refusal(store: Store, namespace: str, *, at: float) -> None:
    """Record that the apiserver refused a pod in ``namespace`` for a quota."""
    with keys.wrapped():
        store.r.hset(keys.key(store, QUOTA_REFUSED), namespace, repr(at))


def refusals(store: Store) -> dict[str, float]:
    """Namespace key -> when a pod there was last refused for a quota (one small hash)."""
    return keys.timestamps(store, QUOTA_REFUSED)


@dataclass(frozen=True)
class QuotaRead:
    quotas: tuple[NamespaceQuota, ...]
    counted: frozenset[str]
    """Berth job ids whose pods ``status.used`` already counts: those recorded on
    their jobs in the store view read before the quotas were."""
    read_at: float
    """Wall-clock time of the read, to compare with :func:`refusals`."""


@dataclass
class _Entry:
    read: QuotaRead | None
    fresh_until: float  # monotonic


class QuotaReader:
    """Per process: each namespace's last quota read, and namespaces Berth may not read."""

    def __init__(self, *, ttl_s: float, forbidden_recheck_s: float) -> None:
        self.ttl_s = ttl_s
        self.forbidden_recheck_s = forbidden_recheck_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def read(
        self,
        key: str,
        cluster: Callable[[], Cluster],
        *,
        counted: frozenset[str],
        refused_at: float = 0.0,
    ) -> QuotaRead | None:
        """The quotas of namespace ``key``: cached, or read now; None when unknown.

        ``cluster`` is called only for a fresh read, so a pass that finds a fresh
        entry does not connect. ``counted``: the placed jobs with a pod recorded in
        the store view the caller read before calling (see namespace_quota).
        """
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and now < entry.fresh_until:
            stale = entry.read is not None and refused_at > entry.read.read_at
            if not stale:
                return entry.read
        read_at = time.time()
        try:
            quotas = read_quotas(cluster())
        except KubeForbidden as e:
            log.warning(
                "may not read resourcequotas in %s (%s); asking again in %gs, and pods"
                " refused for quota meanwhile just wait",
                key,
                e.message,
                self.forbidden_recheck_s,
            )
            self._put(key, _Entry(None, now + self.forbidden_recheck_s))
            return None
        except KubeError as e:
            # Unreachable or erroring: keep the last answer for one more TTL rather than
            # forget the quota (placing as if none, which only a refusal would correct).
            log.warning("cannot read resourcequotas in %s: %s", key, e.message)
            last = entry.read if entry is not None else None
            self._put(key, _Entry(last, now + self.ttl_s))
            return last
        read = QuotaRead(quotas=quotas, counted=counted, read_at=read_at)
        self._put(key, _Entry(read, now + self.ttl_s))
        return read

    def _put(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
