"""The proxy worker's lease on a real Redis and the real local cluster.

One proxy worker leads at a time. A leader that loses its lease (Redis away
longer than the TTL, and another worker took over meanwhile) stops leading and
waits as a standby, then leads again once the lease is free: it never exits,
and it never leads beside another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from shared.settings import RedisSettings, Settings
from shared.state.store import Store
from tests.polling import wait_until
from workers import proxy

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Settings:
    config = tmp_path / "server" / "config.yml"
    config.parent.mkdir()
    config.write_text(
        "projects:\n- name: main\n  backends:\n  - type: kubernetes\n"
        f"    kubeconfig: {{filename: {local_cluster.kubeconfig}}}\n"
    )
    return Settings(
        home=tmp_path,
        server_config=config,
        redis=RedisSettings(url=local_cluster.redis_url, key_prefix=redis_prefix),
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.connect(settings.redis.url, prefix=settings.redis.key_prefix, timeout_s=5)
    try:
        yield s
    finally:
        for key in s.r.scan_iter(f"{settings.redis.key_prefix}:*", count=1000):
            s.r.delete(key)
        s.close()


def _holder(store: Store) -> str | None:
    raw = store.r.get(store.key("lease", "proxy-worker"))
    return raw.decode() if raw else None


def test_a_leader_that_lost_its_lease_stands_by_and_leads_again(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers")  # workers.lease and workers.proxy
    stops = [threading.Event(), threading.Event()]
    workers = [
        threading.Thread(target=proxy.run_proxy_worker, args=(settings,), kwargs={"stop": s})
        for s in stops
    ]
    for w in workers:
        w.start()
    try:
        leader = wait_until(lambda: _holder(store), timeout=15, what="a leader")
        wait_until(
            lambda: "proxy worker is the leader" in caplog.text, timeout=15, what="leader log"
        )
        assert caplog.text.count("proxy worker is the leader") == 1  # the other stands by

        # Another worker took the lease while the leader could not reach Redis. It
        # holds it for longer than a renewal period, so the leader must notice.
        store.r.set(store.key("lease", "proxy-worker"), "someone-else", px=8000)
        wait_until(lambda: "back to standby" in caplog.text, timeout=15, what="standby")
        assert all(w.is_alive() for w in workers)
        assert _holder(store) == "someone-else"  # nobody overwrote the new leader's lease

        again = wait_until(
            lambda: (h := _holder(store)) not in (None, "someone-else") and h,
            timeout=25,
            what="a leader again",
        )
        assert again and leader
        wait_until(
            lambda: caplog.text.count("proxy worker is the leader") == 2,
            timeout=10,
            what="the second leadership logged",
        )
    finally:
        for s in stops:
            s.set()
        for w in workers:
            w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
    assert _holder(store) is None  # released on the way out
