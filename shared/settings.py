"""All of Berth's process settings, in one pydantic-settings class.

Every field reads from ``BERTH_<GROUP>__<FIELD>`` (for example
``BERTH_REDIS__URL``). Settings are loaded once at process start with
:func:`load_settings` and passed down; no module reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The placeholder that may appear in example env files; refused outside development.
PLACEHOLDER_SECRET = "changethis"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    """Broker and system of record. Loopback by default: Berth ships no open ports."""
    socket_timeout_s: float = 5.0
    """Seconds a single Redis command may take; long enough for an AOF rewrite pause."""
    key_prefix: str = "berth"
    """Prefix of every key, so tests and several installations can share one Redis."""


class KubeSettings(BaseModel):
    request_timeout_s: float = 10.0
    """Seconds per Kubernetes API call; every call carries it (no unbounded waits)."""
    watch_timeout_s: int = 240
    """Server-side watch timeout, seconds; shorter than most load balancers' idle cut-off."""


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    """Loopback by default; bind wider only behind TLS."""
    port: int = 3000
    admin_token: SecretStr | None = None
    """Fixed admin token for the first start; generated and printed once when unset."""


class FlowerSettings(BaseModel):
    basic_auth: SecretStr | None = None
    """``user:password`` for Flower's basic auth; unset means no auth (loopback only)."""


class LocalClusterSettings(BaseModel):
    startup_timeout_s: float = 120.0
    """Seconds to wait for the whole control plane; apiserver cold start was seen at 10-35 s."""
    build_timeout_s: float = 3600.0
    """Seconds the cold Go build may take on 2 cores (measured well under this)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".berth")
    """Berth's state directory: server config, local cluster, SSH includes."""
    environment: str = "development"
    """``development`` allows placeholder secrets; anything else refuses them."""
    server_config: Path | None = None
    """Server config file; defaults to ``<home>/server/config.yml``."""
    default_image: str = "dstackai/base:py3.12-0.7-cuda-12.1"
    """Image for runs that name none: dstack's base image, with Python and CUDA,
    so configurations written for dstack behave the same."""
    redis: RedisSettings = RedisSettings()
    kube: KubeSettings = KubeSettings()
    api: ApiSettings = ApiSettings()
    local: LocalClusterSettings = LocalClusterSettings()
    flower: FlowerSettings = FlowerSettings()

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        token = self.api.admin_token
        if (
            self.environment != "development"
            and token is not None
            and token.get_secret_value() == PLACEHOLDER_SECRET
        ):
            raise ValueError("api.admin_token is the placeholder; set a real secret")
        return self

    @property
    def server_config_path(self) -> Path:
        return self.server_config or self.home / "server" / "config.yml"

    @property
    def local_dir(self) -> Path:
        return self.home / "local"


def load_settings() -> Settings:
    """Read settings from the environment once, at process start."""
    return Settings()
