"""Before the proxy forwards a request: the service's rate limits, and its request count.

Both are Redis calls, made only for a service that asks for them (``rate_limits``,
``scaling``), so a plain service costs the proxy nothing more. A refused request
is not counted: the count says how many requests the replicas had to serve,
which is what ``scaling`` sizes them for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from shared.configuration.fields import RateLimit
from shared.services import service_traffic
from shared.services.service_traffic import Refusal
from shared.state.store import Store

_LIMITS = TypeAdapter(list[RateLimit])


def admit(
    store: Store,
    *,
    run_id: str,
    limits: Sequence[RateLimit],
    counted: bool,
    path: str,
    client_ip: str,
    headers: Mapping[str, str],
) -> Refusal | None:
    """Refuse a request over a rate limit; count an admitted one for ``scaling``."""
    if limits:
        refusal = service_traffic.check_rate_limit(
            store, run_id=run_id, limits=limits, path=path, client_ip=client_ip, headers=headers
        )
        if refusal is not None:
            return refusal
    if counted:
        service_traffic.count_request(store, run_id, now=time.time())
    return None


def rate_limits_of(configuration: Mapping[str, Any]) -> tuple[RateLimit, ...]:
    """The stored service configuration's ``rate_limits``, without validating the rest."""
    raw = configuration.get("rate_limits") or []
    return tuple(_LIMITS.validate_python(raw)) if raw else ()
