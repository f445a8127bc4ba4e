"""Project secrets: encrypted in Redis, named in configurations as ``${{ secrets.NAME }}``.

Values are encrypted with Fernet under ``secrets.key`` from the settings, so a
copy of Redis (an AOF file, a backup) holds no plain secret. A configuration
keeps the expression, never the value: the API shows it as written, events and
task payloads carry ids, and only the provisioning worker decrypts, to put the
value into the job's Kubernetes Secret (env vars reference it with
``secretKeyRef``; the registry password goes into the pull secret).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from shared.errors import ConfigError, NotFoundError, StoreError
from shared.state.store import Store, wrapped

__all__ = [
    "SECRET_NAME",
    "SecretBox",
    "SecretInfo",
    "delete",
    "interpolate",
    "list_names",
    "missing",
    "referenced",
    "resolve",
    "set_value",
]

SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
_REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
_MAX_VALUE_BYTES = 64 * 1024  # a token or a key file; a Secret holds 1 MiB for everything


@dataclass(frozen=True)
class SecretInfo:
    name: str
    updated_at: float


class SecretBox:
    """Encrypts and decrypts with the key from the settings; refuses clearly without one."""

    def __init__(self, key: SecretStr | None) -> None:
        self._fernet: Fernet | None = None
        if key is not None:
            try:
                self._fernet = Fernet(key.get_secret_value().encode())
            except ValueError as e:
                raise ConfigError(
                    "secrets.key is not a Fernet key (32 url-safe base64-encoded bytes)",
                    field="secrets.key",
                ) from e

    def encrypt(self, value: str) -> bytes:
        return self._require().encrypt(value.encode())

    def decrypt(self, token: bytes, *, name: str) -> str:
        try:
            return self._require().decrypt(token).decode()
        except InvalidToken as e:
            raise StoreError(
                f"secret {name} cannot be decrypted with secrets.key (was the key changed?)"
            ) from e

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise ConfigError(
                "project secrets need secrets.key in the server settings (BERTH_SECRETS__KEY)",
                field="secrets.key",
            )
        return self._fernet


def set_value(store: Store, box: SecretBox, project: str, name: str, value: str) -> None:
    if SECRET_NAME.fullmatch(name) is None:
        raise ConfigError(
            f"invalid secret name {name!r}: letters, digits, _ and -, starting with a letter or _",
            field="name",
        )
    if len(value.encode()) > _MAX_VALUE_BYTES:
        raise ConfigError(f"a secret holds at most {_MAX_VALUE_BYTES // 1024} KiB", field="value")
    token = box.encrypt(value)
    with wrapped():
        pipe = store.r.pipeline(transaction=True)
        pipe.hset(_key(store, project), name, token)
        pipe.hset(_stamps(store, project), name, repr(time.time()))
        pipe.execute()


def delete(store: Store, project: str, name: str) -> None:
    with wrapped():
        removed = store.r.hdel(_key(store, project), name)
        store.r.hdel(_stamps(store, project), name)
    if not removed:
        raise NotFoundError(f"no secret {name!r} in project {project!r}", field="name")


def list_names(store: Store, project: str) -> list[SecretInfo]:
    with wrapped():
        stamps = store.r.hgetall(_stamps(store, project))
    return sorted(
        (SecretInfo(name=k.decode(), updated_at=float(v)) for k, v in stamps.items()),
        key=lambda s: s.name,
    )


def referenced(values: Iterable[str]) -> set[str]:
    """The secret names ``${{ secrets.NAME }}`` expressions in ``values`` refer to."""
    return {m.group(1) for value in values for m in _REFERENCE.finditer(value)}


def missing(store: Store, project: str, names: Iterable[str]) -> list[str]:
    wanted = sorted(set(names))
    if not wanted:
        return []
    with wrapped():
        present = store.r.hmget(_key(store, project), wanted)
    return [name for name, token in zip(wanted, present, strict=True) if token is None]


def resolve(store: Store, box: SecretBox, project: str, names: Iterable[str]) -> dict[str, str]:
    """Decrypted values of ``names``; NotFoundError naming the first one that is gone."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with wrapped():
        tokens = store.r.hmget(_key(store, project), wanted)
    values = {}
    for name, token in zip(wanted, tokens, strict=True):
        if token is None:
            raise NotFoundError(f"secret {name} no longer exists in project {project}", field=name)
        values[name] = box.decrypt(bytes(token), name=name)
    return values


def interpolate(value: str, values: Mapping[str, str]) -> str:
    """``value`` with every ``${{ secrets.NAME }}`` replaced from ``values``."""
    return _REFERENCE.sub(lambda m: values[m.group(1)], value)


def _key(store: Store, project: str) -> str:
    return store.key("secrets", project)


def _stamps(store: Store, project: str) -> str:
    return store.key("secrets-updated", project)


def references(conf: object) -> dict[str, set[str]]:
    """Field (``env.HF_TOKEN``, ``registry_auth.password``) -> the secrets it names."""
    found: dict[str, set[str]] = {}
    for key, value in (getattr(conf, "env", None) or {}).items():
        if value is not None and (names := referenced([value])):
            found[f"env.{key}"] = names
    auth = getattr(conf, "registry_auth", None)
    if auth is not None:
        for field, value in (
            ("username", auth.username),
            ("password", auth.password.get_secret_value()),
        ):
            if names := referenced([value]):
                found[f"registry_auth.{field}"] = names
    return found


def check_submission(store: Store, project: str, conf: object) -> None:
    """Every secret the configuration names exists in the project; ConfigError naming it."""
    fields = references(conf)
    gone = set(missing(store, project, {n for names in fields.values() for n in names}))
    for field, names in sorted(fields.items()):
        absent = sorted(names & gone)
        if absent:
            raise ConfigError(
                f"secret {absent[0]} does not exist in project {project}"
                f" (berth secret set {absent[0]})",
                field=field,
            )
