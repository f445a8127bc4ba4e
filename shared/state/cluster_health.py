"""Which clusters' apiservers do not answer: written by the proxy worker's probe
(:mod:`workers.cluster_health`), read by the scheduler and ``berth status``.

The hash ``clusters-unreachable`` holds cluster key -> why, since when, and when last
probed. Readers ignore a mark not stamped for ``STALE_S``, so a proxy worker that
died leaves no cluster shunned.
"""

from __future__ import annotations

import json
import time

from shared.state.store import Store

HASH = "clusters-unreachable"
STALE_S = 60.0


def unreachable(store: Store, *, now: float | None = None) -> dict[str, str]:
    """Cluster key -> why it does not answer, for the marks a live prober keeps."""
    now = time.time() if now is None else now
    out: dict[str, str] = {}
    for key, raw in store.r.hgetall(store.key(HASH)).items():
        try:
            mark = json.loads(raw)
            if now - float(mark["checked_at"]) <= STALE_S:
                out[key.decode()] = str(mark["reason"])
        except (ValueError, KeyError, TypeError):
            continue  # a mark this version cannot read is no reason to shun a cluster
    return out


def mark_unreachable(store: Store, cluster: str, reason: str, *, now: float) -> bool:
    """Record that ``cluster`` did not answer at ``now``; True if it answered before."""
    key = store.key(HASH)
    raw = store.r.hget(key, cluster)
    since = json.loads(raw)["since"] if raw else now
    store.r.hset(key, cluster, json.dumps({"reason": reason, "since": since, "checked_at": now}))
    return raw is None


def mark_reachable(store: Store, cluster: str) -> bool:
    """Clear ``cluster``'s mark; True if it had one."""
    return bool(store.r.hdel(store.key(HASH), cluster))
