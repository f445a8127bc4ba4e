"""Fixtures the integration modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.local.cluster import ClusterState
from shared.state.store import Store


@pytest.fixture
def store(local_cluster: ClusterState, redis_prefix: str) -> Iterator[Store]:
    s = Store.connect(local_cluster.redis_url, prefix=redis_prefix, timeout_s=10)
    yield s
    for key in s.r.scan_iter(f"{redis_prefix}*", count=1000):
        s.r.delete(key)
    s.close()
