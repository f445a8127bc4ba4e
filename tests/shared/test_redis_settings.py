"""Redis settings: one URL as before, or Sentinels with a master name and a replica wait."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.errors import ConfigError
from shared.settings import RedisSettings, Settings
from shared.state import broker_transport, redis_client
from shared.state.store import Store
from shared.tasks import create_celery


def test_without_sentinels_the_store_and_the_broker_use_the_one_url() -> None:
    settings = RedisSettings(url="redis://127.0.0.1:6390/2")
    assert redis_client.broker_url(settings) == "redis://127.0.0.1:6390/2"
    assert redis_client.broker_transport_options(settings) == {}
    client = redis_client.connect(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (6390, 2, 5.0)
    client.close()


def test_with_sentinels_the_broker_names_every_sentinel_with_the_urls_database() -> None:
    settings = RedisSettings(
        url="redis://:s3cr%2Ft@ignored:6379/3", sentinels=["10.0.0.1:26379", "10.0.0.2:26380"]
    )
    assert redis_client.broker_url(settings) == (
        "sentinel://:s3cr%2Ft@10.0.0.1:26379/3;sentinel://:s3cr%2Ft@10.0.0.2:26380/3"
    )
    options = redis_client.broker_transport_options(settings)
    assert options["master_name"] == "berth"
    sentinel_kwargs = options["sentinel_kwargs"]
    assert (sentinel_kwargs["socket_timeout"], sentinel_kwargs["socket_connect_timeout"]) == (5, 5)


def test_celery_keeps_its_transport_options_and_adds_the_master_name() -> None:
    redis = RedisSettings(sentinels=["127.0.0.1:26379"], master_name="prod")
    app = create_celery(Settings(redis=redis))
    options = app.conf.broker_transport_options
    assert options["master_name"] == "prod"
    assert options["visibility_timeout"] == 600
    assert app.conf.broker_url.startswith("sentinel://127.0.0.1:26379/0")


def test_the_store_client_asks_the_sentinels_for_the_primary_with_the_same_timeouts() -> None:
    settings = RedisSettings(sentinels=["127.0.0.1:26379"], socket_timeout_s=3.0)
    client = redis_client.connect(settings)
    pool = client.connection_pool
    assert pool.service_name == "berth"
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (3.0, 3.0)
    assert kwargs["retry_on_timeout"] is True
    sentinel = pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 3.0
    client.close()


@pytest.mark.parametrize("entry", ["nope", "host:", ":26379", "host:port", "host:70000"])
def test_a_sentinel_that_is_not_host_port_is_refused_naming_the_field(entry: str) -> None:
    with pytest.raises(ValidationError) as e:
        RedisSettings(sentinels=[entry])
    assert e.value.errors()[0]["loc"] == ("sentinels",)
    assert "host:port" in str(e.value)


def test_a_replica_wait_longer_than_the_socket_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="replica_ack_timeout_ms"):
        RedisSettings(min_replica_acks=1, replica_ack_timeout_ms=5000, socket_timeout_s=5.0)


def test_a_negative_replica_count_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as e:
        RedisSettings(min_replica_acks=-1)
    assert e.value.errors()[0]["loc"] == ("min_replica_acks",)


@pytest.mark.parametrize(
    ("sentinels", "transport"),
    [([], broker_transport.Transport), (["127.0.0.1:26379"], broker_transport.SentinelTransport)],
)
def test_the_broker_uses_berths_transport_that_survives_a_lost_connection(
    sentinels: list[str], transport: type
) -> None:
    app = create_celery(Settings(redis=RedisSettings(sentinels=sentinels)))
    with app.connection_for_write() as connection:
        assert connection.get_transport_cls() is transport


def test_a_store_whose_socket_timeout_would_cut_the_replica_wait_is_refused() -> None:
    settings = RedisSettings(min_replica_acks=1, replica_ack_timeout_ms=1000)
    with pytest.raises(ConfigError) as e:
        Store.from_settings(settings, timeout_s=0.5)
    assert e.value.field == "redis.replica_ack_timeout_ms"
