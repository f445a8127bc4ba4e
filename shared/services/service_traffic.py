"""What Berth's proxy knows about a service's requests, kept in Redis for every API replica.

- **Rate limits** (dstack's ``rate_limits``): one GCRA cell per (service, prefix,
  partition), the algorithm behind nginx's ``limit_req ... burst=N nodelay`` that
  dstack's gateway configures. A cell holds one number, the theoretical arrival
  time: a request passes while that is at most ``burst`` intervals ahead of now,
  and moves it one interval on. The check and the move are one Lua call on
  Redis' clock, so API replicas and their clocks never disagree.
- **Requests per second** (dstack's ``scaling: {metric: rps}``): one counter per
  service per second, summed over the scaling window by the beat task
  (:mod:`workers.service_scaling`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.configuration.fields import HeaderKey, RateLimit
from shared.state.store import Store, wrapped

# Longest scaling window dstack allows is 10 minutes; a counter outlives it a little.
_COUNTER_TTL_S = 660
DEFAULT_WINDOW_S = 60  # dstack's: RPS is averaged over the last minute
# Keeps a cell of an idle partition this long past its last request, then drops it.
_CELL_SLACK_MS = 1000

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - burst * interval - now
if wait > 0 then return wait end
local new = tat + interval
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + tonumber(ARGV[3]))
return 0
"""


@dataclass(frozen=True)
class Refusal:
    """A request over a rate limit: answer 429, saying when to try again."""

    prefix: str
    retry_after_s: int


def check_rate_limit(
    store: Store,
    *,
    run_id: str,
    limits: Sequence[RateLimit],
    path: str,
    client_ip: str,
    headers: Mapping[str, str],
) -> Refusal | None:
    """Count a request to ``path`` (the service's own path) against its limit."""
    limit = matching_limit(limits, path)
    if limit is None:
        return None
    partition = partition_of(limit, client_ip=client_ip, headers=headers)
    key = store.key("svc-limit", run_id, _digest(limit.prefix), _digest(partition))
    interval_ms = 1000.0 / limit.rps
    script = store.r.register_script(_GCRA)  # EVALSHA, loading the script once per server
    with wrapped():
        wait_ms = float(script(keys=[key], args=[interval_ms, limit.burst, _CELL_SLACK_MS]))
    if wait_ms <= 0:
        return None
    return Refusal(prefix=limit.prefix, retry_after_s=max(1, int(-(-wait_ms // 1000))))


def matching_limit(limits: Sequence[RateLimit], path: str) -> RateLimit | None:
    """The limit of the longest prefix ``path`` starts with (dstack's rule); pure."""
    found = [limit for limit in limits if path.startswith(limit.prefix)]
    return max(found, key=lambda limit: len(limit.prefix), default=None)


def partition_of(limit: RateLimit, *, client_ip: str, headers: Mapping[str, str]) -> str:
    """Which partition a request counts in: its client IP, or its value of a header.

    Requests without the header share one partition, as nginx counts an empty key
    (dstack documents no exemption for them). Pure.
    """
    if isinstance(limit.key, HeaderKey):
        return "header:" + headers.get(limit.key.header.lower(), "")
    return "ip:" + client_ip


def count_request(store: Store, run_id: str, *, now: float) -> None:
    """One more request to the service in the second ``now`` falls in."""
    key = _counter_key(store, run_id, int(now))
    with wrapped():
        pipe = store.r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, _COUNTER_TTL_S)
        pipe.execute()


def requests_per_second(store: Store, run_id: str, *, window_s: int, now: float) -> float:
    """Average requests per second over the ``window_s`` whole seconds before ``now``."""
    last = int(now) - 1  # the current second is still filling
    keys = [_counter_key(store, run_id, second) for second in range(last - window_s + 1, last + 1)]
    with wrapped():
        counts = store.r.mget(keys)
    return sum(int(c) for c in counts if c) / window_s


def _counter_key(store: Store, run_id: str, second: int) -> str:
    return store.key("svc-rps", run_id, str(second))


def _digest(text: str) -> str:
    # Header values may be credentials (Authorization): only a digest becomes a key.
    return hashlib.sha256(text.encode()).hexdigest()[:32]
