"""Credentials that change while a client lives: exec plugins and token files.

Why Berth keeps its own cache rather than the kubernetes client's: the client's
``refresh_api_key_hook`` re-runs an ``exec`` plugin on every request whose credential
expires within 5 minutes (``EXPIRY_SKEW_PREVENTION_DELAY``), so a 30 s credential
meant a plugin run per request (154 runs in 30 s of an idle worker), and a 15 minute
EKS token meant one per request for its last third. The hook also has no lock, so
threads ran the plugin side by side, and no timeout.

Here a :class:`CredentialCache` hands out one credential until it is due
(:func:`refresh_skew` before it expires), then exactly one thread fetches the next
while the others keep using the still-valid one; only when the credential has
actually expired do the others wait, and never longer than the plugin's timeout. A
credential without an expiry is kept until the apiserver answers 401
(:meth:`CredentialCache.invalidate`), as client-go does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.errors import KubeCredentialError

log = logging.getLogger(__name__)

MAX_SKEW_S = 60.0
"""At most this long before expiry a credential is refreshed: the request must reach
the apiserver (authentication happens when it arrives, so milliseconds) and clocks of
NTP-synced hosts disagree by well under a second; a minute covers a badly kept one."""
SKEW_FRACTION = 0.1
"""... and at most this share of its lifetime, so a 30 s credential serves 27 s rather
than not at all (a fixed 5 minutes would exceed it)."""
TOKEN_FILE_REREAD_S = 60.0
"""Seconds a ``tokenFile`` is trusted before it is read again: client-go's cached file
token source uses one minute too, and projected ServiceAccount tokens are rotated at
80% of a lifetime of at least 10 minutes, so a minute-old token is always still valid."""
FAILURE_BACKOFF_S = 5.0
"""Seconds a failed fetch is remembered and re-raised without running the plugin again,
so a broken plugin is run every few seconds, not once per request."""


@dataclass(frozen=True)
class Credential:
    """A bearer token or a client certificate, and when to fetch the next one.

    Times are wall-clock epoch seconds, because expiry timestamps are wall-clock.
    """

    token: str | None = None
    client_certificate_data: str | None = None
    """PEM text, as exec plugins print it."""
    client_key_data: str | None = None
    expires_at: float | None = None
    """None: unknown; the credential is used until the apiserver refuses it."""
    refresh_at: float | None = None
    """When to fetch the next one; None: only after a 401."""

    def due(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def refresh_skew(lifetime_s: float) -> float:
    """Seconds before expiry to refresh a credential that lives ``lifetime_s`` seconds."""
    return min(MAX_SKEW_S, SKEW_FRACTION * max(0.0, lifetime_s))


def parse_exec_credential(
    output: dict[str, Any], *, api_version: str, plugin: str, now: float
) -> Credential:
    """The credential in an ``ExecCredential`` a plugin printed; KubeCredentialError if none."""

    def bad(problem: str) -> KubeCredentialError:
        return KubeCredentialError(
            f"credential plugin {plugin} printed {problem}; expected an ExecCredential"
            f" of {api_version} with status.token or status.clientCertificateData",
            plugin=plugin,
        )

    if output.get("kind") != "ExecCredential":
        raise bad(f"kind {output.get('kind')!r}")
    if output.get("apiVersion") != api_version:
        raise bad(f"apiVersion {output.get('apiVersion')!r}")
    status = output.get("status")
    if not isinstance(status, dict):
        raise bad("no status")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if token is None and (cert is None or key is None):
        raise bad("neither a token nor a certificate with its key")
    expires_at: float | None = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            expires_at = datetime.fromisoformat(str(stamp)).timestamp()
        except ValueError:
            raise bad(f"an expirationTimestamp that is not RFC 3339: {stamp!r}") from None
    refresh_at = None if expires_at is None else expires_at - refresh_skew(expires_at - now)
    return Credential(
        token=str(token) if token else None,
        client_certificate_data=str(cert) if cert else None,
        client_key_data=str(key) if key else None,
        expires_at=expires_at,
        refresh_at=refresh_at,
    )


def read_token_file(path: Path, *, now: float) -> Credential:
    """The token in ``path``, trusted for :data:`TOKEN_FILE_REREAD_S`.

    KubeCredentialError if unreadable or empty: a projected token's volume may be
    mid-update, and the cache keeps the previous token meanwhile.
    """
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise KubeCredentialError(
            f"cannot read the kubeconfig's tokenFile {path}: {e.strerror}", plugin="tokenFile"
        ) from e
    if not token:
        raise KubeCredentialError(f"the kubeconfig's tokenFile {path} is empty", plugin="tokenFile")
    return Credential(token=token, refresh_at=now + TOKEN_FILE_REREAD_S)


class CredentialCache:
    """One credential shared by every thread, fetched again only when due.

    ``fetch`` runs with the cache's lock held: that is the point (concurrent
    threads make one plugin call), and it is bounded by the plugin's own timeout,
    which ``wait_s`` must exceed.
    """

    def __init__(
        self,
        fetch: Callable[[], Credential],
        *,
        wait_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = threading.Lock()  # held for assignments only, never across a fetch
        self._credential: Credential | None = None
        self._failure: tuple[float, KubeCredentialError] | None = None

    def get(self) -> Credential:
        """The current credential, fetching one if there is none or it is due."""
        cached = self._credential
        now = self._clock()
        if cached is not None and not cached.due(now):
            return cached
        if cached is not None and not cached.expired(now):
            # Due but still valid: one thread refreshes, the others carry on with it.
            if not self._lock.acquire(blocking=False):
                return cached
        elif not self._lock.acquire(timeout=self._wait_s):
            raise KubeCredentialError(
                f"waited {self._wait_s:g} s for another thread's credential plugin run",
                plugin="",
            )
        try:
            return self._refresh_locked()
        finally:
            self._lock.release()

    def invalidate(self, stale: Credential) -> None:
        """Forget ``stale`` (the apiserver refused it) unless a newer one replaced it."""
        with self._state:
            if self._credential is stale:
                self._credential = None
                self._failure = None  # a refusal is news: try the plugin again at once

    def _refresh_locked(self) -> Credential:
        cached = self._credential
        now = self._clock()
        if cached is not None and not cached.due(now):
            return cached  # another thread refreshed it while this one waited
        if self._failure is not None and now < self._failure[0]:
            return self._fallback(cached, now, self._failure[1])
        try:
            fresh = self._fetch()
        except KubeCredentialError as e:
            self._failure = (self._clock() + FAILURE_BACKOFF_S, e)
            return self._fallback(cached, self._clock(), e)
        with self._state:
            self._failure = None
            self._credential = fresh
        return fresh

    def _fallback(
        self, cached: Credential | None, now: float, error: KubeCredentialError
    ) -> Credential:
        if cached is not None and not cached.expired(now):
            log.warning("%s; using the current credential until it expires", error)
            return cached
        raise KubeCredentialError(
            error.message, plugin=error.plugin, stderr=error.stderr
        ) from error
