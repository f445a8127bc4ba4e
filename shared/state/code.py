"""A run's code archive (``repos``, ``files``): kept in Redis until its pods have it.

The CLI uploads one gzipped tar per run (``cli/code_bundle.py``); it is stored
under its sha256, so the same code sent twice is kept once, with a TTL
(``code.ttl_s``) and a size cap (``code.max_bytes``) that bound what Redis holds.
The provisioning worker copies it into Secrets in the run's namespace (one or
more: a Secret holds at most 1 MiB), which every pod of the run mounts, so
multi-node tasks get it on every node and nothing in the cluster fetches code
from the network.
"""

from __future__ import annotations

import hashlib
import re

from shared.errors import ConfigError, NotFoundError
from shared.state.store import Store, wrapped

__all__ = ["SECRET_CHUNK_BYTES", "chunks", "load", "save"]

# Bytes of the archive per Secret: under the apiserver's 1 MiB object limit with
# room for base64 (4/3) and the object's metadata.
SECRET_CHUNK_BYTES = 700 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def save(store: Store, data: bytes, *, max_bytes: int, ttl_s: int) -> str:
    """Keep ``data`` (the archive); its sha256. ConfigError over the cap."""
    if len(data) > max_bytes:
        raise ConfigError(
            f"the code archive is {len(data) / 2**20:.1f} MiB, over the server's limit of"
            f" {max_bytes / 2**20:.1f} MiB (code.max_bytes)",
            field="code",
        )
    digest = hashlib.sha256(data).hexdigest()
    with wrapped():
        store.r.set(_key(store, digest), data, ex=ttl_s)
    return digest


def exists(store: Store, digest: str) -> bool:
    _check_digest(digest)
    with wrapped():
        return bool(store.r.exists(_key(store, digest)))


def load(store: Store, digest: str) -> bytes:
    """The archive; NotFoundError when it expired (``code.ttl_s``) or never came."""
    _check_digest(digest)
    with wrapped():
        data = store.r.get(_key(store, digest))
    if data is None:
        raise NotFoundError(
            f"the run's code ({digest[:12]}) is no longer kept (code.ttl_s); submit the run again",
            field="code",
        )
    return bytes(data)


def chunks(data: bytes) -> list[bytes]:
    """The archive cut into Secret-sized pieces, in order."""
    return [data[i : i + SECRET_CHUNK_BYTES] for i in range(0, len(data), SECRET_CHUNK_BYTES)]


def _check_digest(digest: str) -> None:
    if _SHA256.fullmatch(digest) is None:
        raise ConfigError(f"expected a sha256 in hex, got {digest!r}", field="code")


def _key(store: Store, digest: str) -> str:
    return store.key("code", digest)


def check_submission(store: Store, conf: object, digest: str | None) -> None:
    """A run with ``repos`` or ``files`` names an archive Berth holds; one without, none."""
    wants = bool(getattr(conf, "repos", None) or getattr(conf, "files", None))
    if wants and digest is None:
        field = "repos" if getattr(conf, "repos", None) else "files"
        raise ConfigError(
            "repos and files are sent by the berth CLI with the run (berth apply -f);"
            " through the API, POST the archive to /code first and pass its sha256 as code",
            field=field,
        )
    if digest is None:
        return
    if not wants:
        raise ConfigError("code was sent but the configuration has no repos or files", field="code")
    if not exists(store, digest):
        raise ConfigError(
            f"no code archive {digest[:12]} is kept (never uploaded, or expired): upload it again",
            field="code",
        )
