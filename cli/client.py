"""The CLI's HTTP client for the Berth API, and its config file.

``~/.berth/config.yml`` holds the server URL, the token and the default
project. Every request has a timeout; error bodies become Berth's own errors
with the field the server named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import (
    AuthError,
    BerthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    TemporaryError,
)

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_ENV = {"url": "BERTH_URL", "project": "BERTH_PROJECT"}
"""Client settings the environment may give (a run with ``dstack: true`` has them)."""
_STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=30.0, pool=5.0)


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = "http://127.0.0.1:3000"
    token: str
    project: str = "main"


def config_path(home: Path) -> Path:
    return home / "config.yml"


def load_client_config(home: Path, environ: Mapping[str, str] | None = None) -> ClientConfig:
    """``~/.berth/config.yml``, with ``BERTH_URL``, ``BERTH_TOKEN`` (or ``DSTACK_TOKEN``)
    and ``BERTH_PROJECT`` from the environment winning over it: how a run with
    ``dstack: true`` reaches this server with no file at all."""
    env = os.environ if environ is None else environ
    given = {field: env[name] for field, name in _ENV.items() if env.get(name)}
    token = env.get("BERTH_TOKEN") or env.get("DSTACK_TOKEN")
    if token:
        given["token"] = token
    path = config_path(home)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        if "url" in given and "token" in given:
            return ClientConfig.model_validate(given)
        raise ConfigError(
            f"{path} not found: run 'berth config --url URL --token TOKEN' first"
            " (or set BERTH_URL and BERTH_TOKEN)",
            field="config",
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", field="config") from e
    try:
        return ClientConfig.model_validate(raw | given if isinstance(raw, dict) else raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{path}: {err['msg']}", field=".".join(map(str, err["loc"]))) from e


def save_client_config(home: Path, config: ClientConfig) -> Path:
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    path.chmod(0o600)  # it holds a token
    return path


class BerthClient:
    def __init__(
        self, config: ClientConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config
        self.http = httpx.Client(
            base_url=config.url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=_TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    @property
    def _runs(self) -> str:
        return f"/api/projects/{self.config.project}/runs"

    def plan(self, configuration: str) -> dict[str, Any]:
        return _obj(self._json("POST", f"{self._runs}/plan", json={"configuration": configuration}))

    def apply(self, configuration: str, *, code: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"configuration": configuration}
        if code is not None:
            body["code"] = code
        return _obj(self._json("POST", self._runs, json=body))

    def upload_code(self, data: bytes) -> str:
        """Send a run's code archive; its sha256 as the server computed it."""
        answer = _obj(
            self._json(
                "POST",
                f"/api/projects/{self.config.project}/code",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        )
        return str(answer["code"])

    def runs(self, *, all: bool = False) -> list[dict[str, Any]]:
        return self.runs_page(all=all)[0]

    def runs_page(
        self,
        *,
        all: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
        status: str | None = None,
        prefix: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Active runs, or with ``all`` one page of history; and the next page's cursor."""
        query = {"limit": limit, "cursor": cursor, "status": status, "prefix": prefix}
        params: dict[str, str | int] = {k: v for k, v in query.items() if v is not None}
        params["all"] = str(all).lower()
        resp = self._request("GET", self._runs, params=params)
        runs = resp.json()
        if not isinstance(runs, list):
            raise BerthError("the server answered something other than a list of runs")
        return runs, resp.headers.get("X-Berth-Next-Cursor")

    def run(self, name: str) -> dict[str, Any]:
        return _obj(self._json("GET", f"{self._runs}/{name}"))

    def stop(self, name: str, *, abort: bool = False) -> dict[str, Any]:
        return _obj(self._json("POST", f"{self._runs}/{name}/stop", json={"abort": abort}))

    def ssh_access(self, name: str) -> dict[str, Any]:
        """How to reach the run's pods over SSH: the jump host, pod addresses, host keys."""
        return _obj(self._json("GET", f"{self._runs}/{name}/ssh"))

    def delete(self, name: str) -> None:
        self._json("DELETE", f"{self._runs}/{name}")

    def events(
        self, name: str, *, after: str = "-", kubernetes: bool = False
    ) -> list[dict[str, Any]]:
        params = {"after": after, "kubernetes": str(kubernetes).lower()}
        return self._json("GET", f"{self._runs}/{name}/events", params=params)  # type: ignore[no-any-return]

    def logs(
        self,
        name: str,
        *,
        follow: bool = False,
        job: int = 0,
        replica: int = 0,
        attempt: int | None = None,
        since: str | None = None,
        tail: int | None = None,
        timestamps: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Iterator[bytes]:
        """A job's output; ``headers`` (if given) receives the answer's headers
        (``x-berth-attempts``, ``x-berth-attempt``) once the stream starts."""
        params: dict[str, str | int] = {
            "follow": str(follow).lower(),
            "job": job,
            "replica": replica,
            "timestamps": str(timestamps).lower(),
        }
        optional = {"attempt": attempt, "since": since, "tail": tail}
        params |= {k: v for k, v in optional.items() if v is not None}
        with self.http.stream(
            "GET", f"{self._runs}/{name}/logs", params=params, timeout=_STREAM_TIMEOUT
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise _error(resp)
            if headers is not None:
                headers.update({k.lower(): v for k, v in resp.headers.items()})
            yield from resp.iter_bytes()

    def offers(self, **query: Any) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        return _obj(self._json("GET", f"/api/projects/{self.config.project}/offers", params=params))

    def nodes(self) -> dict[str, Any]:
        return _obj(self._json("GET", f"/api/projects/{self.config.project}/nodes"))

    def secrets(self) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/projects/{self.config.project}/secrets")  # type: ignore[no-any-return]

    def set_secret(self, name: str, value: str) -> None:
        path = f"/api/projects/{self.config.project}/secrets/{name}"
        self._json("PUT", path, json={"value": value})

    def delete_secret(self, name: str) -> None:
        self._json("DELETE", f"/api/projects/{self.config.project}/secrets/{name}")

    def schedules(self) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/projects/{self.config.project}/schedules")  # type: ignore[no-any-return]

    def delete_schedule(self, name: str) -> None:
        self._json("DELETE", f"/api/projects/{self.config.project}/schedules/{name}")

    def fleets(self) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/projects/{self.config.project}/fleets")  # type: ignore[no-any-return]

    def apply_fleet(self, configuration: str) -> dict[str, Any]:
        return _obj(
            self._json(
                "POST",
                f"/api/projects/{self.config.project}/fleets",
                json={"configuration": configuration},
            )
        )

    def delete_fleet(self, name: str) -> None:
        self._json("DELETE", f"/api/projects/{self.config.project}/fleets/{name}")

    def volumes(self) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/projects/{self.config.project}/volumes")  # type: ignore[no-any-return]

    def apply_volume(self, configuration: str) -> dict[str, Any]:
        return _obj(
            self._json(
                "POST",
                f"/api/projects/{self.config.project}/volumes",
                json={"configuration": configuration},
            )
        )

    def delete_volume(self, name: str) -> None:
        self._json("DELETE", f"/api/projects/{self.config.project}/volumes/{name}")

    def me(self) -> dict[str, Any]:
        return _obj(self._json("GET", "/api/users/me"))

    def set_ssh_key(self, public_key: str) -> None:
        self._json("PUT", "/api/users/me/ssh-key", json={"public_key": public_key})

    def status(self) -> dict[str, Any]:
        return _obj(self._json("GET", "/api/status"))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        return resp.json() if resp.content else None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise TemporaryError(
                f"cannot reach the Berth server at {self.config.url}: {e}"
                " (is 'berth server' running?)"
            ) from e
        if resp.status_code >= 400:
            raise _error(resp)
        return resp


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BerthError(f"the server answered {type(value).__name__} where an object was expected")
    return value


def _error(resp: httpx.Response) -> BerthError:
    try:
        detail = resp.json()["error"]
        message, field = str(detail["message"]), detail.get("field")
    except (ValueError, KeyError, TypeError):
        message, field = resp.text or resp.reason_phrase, None
    kind: type[BerthError] = {
        401: AuthError,
        404: NotFoundError,
        409: ConflictError,
        422: ConfigError,
    }.get(resp.status_code, BerthError)
    if resp.status_code >= 500:
        kind = TemporaryError
    return kind(message, field=field)
