"""Sentinels and Redis servers that ask for passwords, as managed offerings set them up.

The Redis servers' password travels in ``redis.url``, the Sentinels' own in
``redis.sentinel_password``; the store and the Celery broker reach the primary
through them, and follow it through a failover.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import StoreError
from shared.settings import RedisSettings, Settings
from shared.state.store import Store
from shared.tasks import create_celery
from tests.factories import one_job_run, submitted
from tests.polling import wait_until
from tests.reliability.faults import acknowledged_write
from tests.reliability.world import sigkill
from tests.sentinel import SentinelGroup, start_sentinel_group

pytestmark = pytest.mark.integration

DATA_PASSWORD = "data-pw-1"
SENTINEL_PASSWORD = "sentinel-pw-2"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = start_sentinel_group(
        tmp_path / "group", password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    yield g
    g.stop()


def _settings(group: SentinelGroup, **changes: object) -> RedisSettings:
    return RedisSettings(
        url=f"redis://:{DATA_PASSWORD}@127.0.0.1/0",
        sentinels=group.addresses,
        master_name=group.master_name,
        sentinel_password=SENTINEL_PASSWORD,
        socket_timeout_s=2,
    ).model_copy(update=changes)


def test_the_store_and_the_broker_reach_the_primary_through_sentinels_with_passwords(
    group: SentinelGroup,
) -> None:
    settings = _settings(group)
    store = Store.from_settings(settings)
    try:
        run, jobs = one_job_run()
        store.create_run(run, jobs, submitted())
        assert store.get_run(run.id).name == run.name
        # The primary goes; the store finds the new one through the same Sentinels.
        sigkill(group.primary())
        wait_until(lambda: acknowledged_write(store), timeout=60, what="a write after failover")
        assert store.get_run(run.id).name == run.name
    finally:
        store.close()
    # The broker as Berth's processes open it (the Celery app, Berth's transport).
    app = create_celery(Settings(redis=settings))
    with app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=3)
        with broker.SimpleQueue("sentinel-auth-probe") as queue:
            queue.put({"run": "probe"})
            assert queue.get(timeout=5).payload == {"run": "probe"}


@pytest.mark.parametrize("password", [None, "wrong-sentinel-pw"])
def test_without_the_sentinels_password_the_error_names_the_setting_and_shows_no_password(
    group: SentinelGroup, password: str | None
) -> None:
    store = Store.from_settings(_settings(group, sentinel_password=password), retries=0)
    try:
        with pytest.raises(StoreError, match=r"redis\.sentinel_password") as caught:
            store.get_run("missing")
    finally:
        store.close()
    told = "".join(traceback.format_exception(caught.value))
    assert "AuthenticationError" in told
    assert "wrong-sentinel-pw" not in told and DATA_PASSWORD not in told


def test_without_the_servers_password_the_error_names_redis_url(group: SentinelGroup) -> None:
    store = Store.from_settings(_settings(group, url="redis://127.0.0.1/0"), retries=0)
    try:
        with pytest.raises(StoreError, match=r"password in redis\.url"):
            store.get_run("missing")
    finally:
        store.close()
