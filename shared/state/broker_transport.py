"""kombu's Redis transports, with one fix: a worker survives losing the broker
while it holds unacknowledged messages.

On a lost broker connection, Celery 5.7's consumer first collects the connection,
which detaches its transport (``transport.client = None``), and then closes it.
Closing the channel puts the unacknowledged messages back with a fresh Redis
client, whose address it reads from ``transport.client``: an ``AttributeError``,
which Celery calls unrecoverable, and the worker exits. Seen in
``tests/reliability/test_sentinel_failover.py`` when the primary was killed (one
of two workers died); the same path runs when a lone Redis dies. Here that read
fails as a *connection* error instead, which the close ignores as it ignores any
other, and the consumer reconnects. The messages stay in the broker's unacked set:
kombu redelivers them after the visibility timeout, and beat's sweep resends
whatever they leave undone within seconds.

:func:`register` maps the ``redis``, ``rediss`` and ``sentinel`` URL schemes to
these classes (kombu resolves a transport by scheme again after each failover
switch between Sentinel URLs, so naming the class once would not last).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis


def register() -> None:
    """Make the URL schemes Berth's broker uses resolve to these transports."""
    aliases = {
        "redis": f"{__name__}:Transport",
        "rediss": f"{__name__}:Transport",
        "sentinel": f"{__name__}:SentinelTransport",
    }
    kombu_transport.TRANSPORT_ALIASES.update(aliases)
    # kombu remembers each scheme's class once resolved: a connection made before this
    # call (a library, a test) would otherwise keep the stock class for the process.
    cache = getattr(kombu_transport, "_transport_cache", {})
    for scheme in aliases:
        cache.pop(scheme, None)


def _detached(channel: kombu_redis.Channel) -> None:
    if channel.connection.client is None:
        raise redis.ConnectionError("the broker connection was closed after it was lost")


class Channel(kombu_redis.Channel):  # type: ignore[misc]  # kombu is untyped
    def _connparams(self, asynchronous: bool = False) -> Any:
        _detached(self)
        return super()._connparams(asynchronous)


class SentinelChannel(kombu_redis.SentinelChannel):  # type: ignore[misc]  # kombu is untyped
    def _connparams(self, asynchronous: bool = False) -> Any:
        _detached(self)
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):  # type: ignore[misc]  # kombu is untyped
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]  # kombu is untyped
    Channel = SentinelChannel
