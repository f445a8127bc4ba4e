"""The one place that turns :class:`RedisSettings` into connections: the store's
client and the Celery broker's address.

Without ``sentinels`` both go to the single Redis of ``url``, exactly as before.
With them, both ask the Sentinels for the current primary of ``master_name``:
redis-py's ``Sentinel.master_for`` looks it up again on every new connection,
and its connections refuse a demoted primary (``READONLY``) by reconnecting, so
after a failover the next command reaches the new primary; the commands that were
in flight fail as any Redis outage does (``StoreError``, 503 "retry later"). kombu's
``sentinel://`` transport does the same for the broker, and Celery's consumer
restarts its connection on the error (``broker_connection_retry``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import (  # type: ignore[attr-defined]  # the stubs predate redis 5.1's
    ExponentialWithJitterBackoff,
    NoBackoff,
)
from redis.connection import parse_url
from redis.credentials import UsernamePasswordCredentialProvider
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from shared.settings import RedisSettings

HEALTH_CHECK_INTERVAL_S = 30  # drop dead pooled connections after a Redis restart
# A command that met a connection error or timeout is sent again up to this many times,
# after ~1, 2, 4 s (redis-py's default, now said for both kinds of client): a Redis
# restart or a Sentinel failover of a few seconds costs a slower answer, not an error.
RETRIES = 3


def connect(
    settings: RedisSettings, *, timeout_s: float | None = None, retries: int = RETRIES
) -> redis.Redis[bytes]:
    """A client for Berth's Redis; every command and connect bounded by ``timeout_s``
    (default ``settings.socket_timeout_s``). ``retries=0`` (benches) sees the first
    moment a failover is over instead of a backoff's."""
    timeout = settings.socket_timeout_s if timeout_s is None else timeout_s
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry_on_timeout": True,
        "retry": Retry(ExponentialWithJitterBackoff(base=1, cap=10), retries),
    }
    if not settings.sentinels:
        client: redis.Redis[bytes] = redis.Redis.from_url(settings.url, **options)
        return client
    sentinel = Sentinel(
        settings.sentinel_addresses,
        sentinel_kwargs=_sentinel_options(timeout, settings.sentinel_password),
        **options,
    )
    primary: redis.Redis[bytes] = sentinel.master_for(
        settings.master_name, **_database(settings.url)
    )
    return primary


def broker_url(settings: RedisSettings) -> str:
    """Celery's broker: ``url`` itself, or kombu's ``sentinel://h1:p1/db;sentinel://h2:p2/db``."""
    if not settings.sentinels:
        return settings.url
    database = _database(settings.url)
    auth = ""
    if "password" in database:
        user = quote(database.get("username", ""), safe="")
        auth = f"{user}:{quote(database['password'], safe='')}@"
    db = database.get("db", 0)
    return ";".join(
        f"sentinel://{auth}{_host(host)}:{port}/{db}" for host, port in settings.sentinel_addresses
    )


def broker_transport_options(settings: RedisSettings) -> dict[str, Any]:
    """What kombu's Sentinel transport needs beyond the URL; nothing for one Redis."""
    if not settings.sentinels:
        return {}
    return {
        "master_name": settings.master_name,
        "sentinel_kwargs": _sentinel_options(settings.socket_timeout_s, settings.sentinel_password),
    }


def no_primary(e: MasterNotFoundError) -> str:
    """What the Sentinels answered, in words. redis-py's own message prints every
    Sentinel connection's settings, the Sentinels' password among them: never shown."""
    text = str(e)
    name = re.search(r"No master found for '([^']*)'", text)
    reasons = sorted(set(re.findall(r" - (\w+\((?:'[^']*'|\"[^\"]*\")\))", text)))
    return (
        f"no Sentinel of redis.sentinels names a primary for"
        f" {name.group(1) if name else 'redis.master_name'!r}"
        f" ({'; '.join(reasons) or 'none answered'}): check redis.sentinels,"
        " redis.master_name and redis.sentinel_password"
    )


def _sentinel_options(timeout_s: float, password: str | None) -> dict[str, Any]:
    """Connections to the Sentinels themselves: the same bounds, and no retry, so a
    dead Sentinel costs one attempt before the next one is asked (not a backoff)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if password is not None:
        # Not ``password=``: redis-py prints a pool's connection settings in its errors
        # ("No master found ... password=..."), which would put it in Celery's logs.
        options["credential_provider"] = UsernamePasswordCredentialProvider(password=password)
    return options


def _database(url: str) -> dict[str, Any]:
    """The database number and credentials of ``url`` (its host is the Sentinels' to say)."""
    parsed = parse_url(url)
    return {k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
