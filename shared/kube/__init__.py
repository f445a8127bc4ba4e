"""The one door to the Kubernetes API: client construction and error wrapping.

Every call goes through :func:`call`, which adds the request timeout and turns
the client's ``ApiException`` and urllib3 errors into Berth's own
:class:`~shared.errors.KubeError` family, so no library error leaks upwards.

Kubeconfigs are read by :mod:`shared.kube.kubeconfig`; ``exec`` plugins and
``tokenFile`` credentials are Berth's own (:mod:`shared.kube.credentials`), cached
per client and refreshed shortly before they expire or when the apiserver answers
401, so a client built once per cluster and process serves every thread.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from shared.errors import (
    ConfigError,
    KubeConflict,
    KubeCredentialError,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeTemporaryError,
    KubeUnauthorized,
)
from shared.kube.credentials import Credential, CredentialCache, read_token_file
from shared.kube.exec_plugin import KILL_WAIT_S
from shared.kube.kubeconfig import ResolvedKubeconfig, resolve
from shared.kube.tls import TlsFiles, share_context
from shared.metrics import KUBE_ERRORS

T = TypeVar("T")

# Label keys on every object Berth creates; selectors and teardown rely on them.
LABEL_PROJECT = "berth.dev/project"
LABEL_RUN = "berth.dev/run"
LABEL_JOB = "berth.dev/job"
LABEL_ATTEMPT = "berth.dev/attempt"
"""Which attempt of its job a pod is (``Job.attempt``): the log collector keeps each apart."""


def attempt_of(labels: Mapping[str, str]) -> int | None:
    """The attempt a pod's labels name (1 when unlabelled); None when the label is garbled."""
    try:
        return int(labels.get(LABEL_ATTEMPT, "1"))
    except ValueError:
        return None


LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "berth"


@dataclass(frozen=True)
class Kube:
    """Typed API groups sharing one ApiClient, plus the per-call timeout (seconds)."""

    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    rbac: client.RbacAuthorizationV1Api
    timeout: float
    auth: BearerAuth | None = None
    """The refreshing credential (exec plugin or tokenFile); None for a static one."""
    tls: TlsFiles | None = None
    """The TLS context every new connection shares (:mod:`shared.kube.tls`); None
    through a proxy."""

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(fn, *args, timeout=self.timeout, **kwargs)
        except KubeUnauthorized:
            if self.auth is None or not self.auth.refused():
                raise
        # Once more with a fresh credential. Safe for any verb: the apiserver
        # authenticates before it does anything, so a 401 request changed nothing.
        return call(fn, *args, timeout=self.timeout, **kwargs)

    def call_bytes(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """Call like :meth:`call` and return the answer's body, unparsed.

        Skips the client's model objects: building them costs about a
        millisecond per pod under the GIL, which dominated every large LIST.
        """
        response: Any = self.call(fn, *args, _preload_content=False, **kwargs)
        try:
            return bytes(response.data)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            # Half read: never hand this connection to another request (see let_go).
            response.close()
            raise KubeTemporaryError(f"Kubernetes API answer broke off: {e}") from e
        finally:
            response.release_conn()

    def post(
        self,
        collection: str,
        namespace: str,
        body: Mapping[str, Any],
        *,
        _preload_content: bool = False,
        _request_timeout: Any = None,
    ) -> Any:
        """POST ``body`` to a core namespaced ``collection`` (``pods``, ``secrets``,
        ``services``), for :meth:`call_bytes`: its raw answer, non-2xx raised as the
        client does.

        The generated ``create_namespaced_*`` validate a dict body into the client's
        model (pydantic) and walk it back into JSON: in a burst, more than half of
        provisioning's CPU per pod. Here the dict goes to ``json.dumps`` as it is, with
        the client's own URL, headers and credentials."""
        api = self.api
        method, url, headers, _, post_params = api.param_serialize(
            method="POST",
            resource_path=f"/api/v1/namespaces/{{namespace}}/{collection}",
            path_params={"namespace": namespace},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            auth_settings=["BearerToken"],
        )
        request = (method, url, headers, dict(body), post_params)
        return api._call_with_legacy_options(
            request, {}, None, _preload_content, _request_timeout, True
        )

    def follow_log(
        self,
        pod: str,
        namespace: str,
        *,
        container: str,
        since_seconds: int | None,
        quiet_s: float,
    ) -> Any:
        """Open a follow of ``pod``'s ``container`` log (with timestamps), unread.

        Unlike the generated ``read_namespaced_pod_log``, this waits at most ``quiet_s``
        for the answer's headers and between its chunks (urllib3's ``ReadTimeoutError``),
        and is never sent again by urllib3. A kubelet (and KWOK) sends a log stream's
        headers with its first bytes, so a follow of a container that has printed
        nothing hangs in the request; with the client's 300 s read timeout and its three
        silent retries, the caller could not end it when the container ended."""
        query: list[tuple[str, Any]] = [
            ("container", container),
            ("follow", "true"),
            ("timestamps", "true"),
        ]
        if since_seconds is not None:
            query.append(("sinceSeconds", since_seconds))
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET",
            resource_path="/api/v1/namespaces/{namespace}/pods/{name}/log",
            path_params={"namespace": namespace, "name": pod},
            query_params=query,
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.rest_client.pool_manager.request(
                method,
                url,
                headers=headers,
                preload_content=False,
                retries=False,
                timeout=urllib3.Timeout(connect=self.timeout, read=quiet_s),
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeTemporaryError(f"Kubernetes API unreachable: {e}") from e
        if response.status >= 400:
            error = ApiException(http_resp=response)  # reads the body, as the client does
            response.release_conn()
            if response.status == 401 and self.auth is not None:
                self.auth.refused()  # the next follow asks the plugin again
            KUBE_ERRORS.labels(str(response.status)).inc()
            raise wrap_api_exception(error)
        return response

    def call_json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call like :meth:`call` and return the answer as the apiserver's JSON."""
        data = self.call_bytes(fn, *args, **kwargs)
        try:
            body = json.loads(data)
        except ValueError as e:
            raise KubeTemporaryError(f"Kubernetes API answered with bad JSON: {e}") from e
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        self.api.close()


def let_go(response: Any, *, read_whole: bool) -> None:
    """Give a streamed answer's connection back to the pool, closed first unless the
    answer was read to its end. A connection put back with unread bytes (a watch or a
    log follow cut short) hands them to the next request on it as its status line
    ("BadStatusLine('1194\\r\\n')"): with urllib3's retries off, that request fails."""
    if not read_whole:
        response.close()
    response.release_conn()


class BearerAuth:
    """The client's ``refresh_api_key_hook``: puts the cached token on every request."""

    def __init__(self, cache: CredentialCache) -> None:
        self._cache = cache
        self._used = threading.local()

    def __call__(self, configuration: client.Configuration) -> None:
        credential = self._cache.get()
        if credential.token is None:
            raise KubeCredentialError(
                "the credential plugin switched from a token to a client certificate;"
                " certificates are read when the client is built, so restart Berth",
                plugin="",
            )
        self._used.credential = credential
        configuration.api_key["BearerToken"] = f"Bearer {credential.token}"

    def refused(self) -> bool:
        """Drop the credential this thread last sent (the apiserver said 401).

        False when this thread sent none, so there is nothing to retry with.
        """
        used: Credential | None = getattr(self._used, "credential", None)
        if used is None:
            return False
        self._cache.invalidate(used)
        return True


def connect(
    *,
    kubeconfig: Path | None = None,
    kubeconfig_data: dict[str, Any] | None = None,
    context: str | None = None,
    timeout: float = 10.0,
    exec_timeout_s: float = 30.0,
    connections: int = 32,
) -> Kube:
    """Build clients the way kubectl would: ``~``, ``KUBECONFIG``, current-context, exec auth.

    ``kubeconfig`` may list several files (``a:b``), merged as kubectl merges them.
    An ``exec`` plugin runs here once, within ``exec_timeout_s`` (a client
    certificate must be in place before the first connection), then again only
    shortly before each credential expires. Up to ``connections`` connections are
    kept open for reuse; past that, a call opens one (a TLS handshake on both
    sides) and closes it after.
    """
    paths = str(kubeconfig) if kubeconfig else config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    resolved = resolve(paths=paths, data=kubeconfig_data, context=context)
    cache = _credential_cache(resolved, exec_timeout_s=exec_timeout_s)
    first = cache.get() if cache is not None else None
    if first is not None and first.token is None:
        _put_certificate(resolved, first)
    cfg = client.Configuration()
    try:
        loader = config.kube_config.KubeConfigLoader(
            config_dict=resolved.config, active_context=resolved.context, config_base_path=""
        )
        loader.load_and_set(cfg)
    except (ConfigException, OSError, ValueError) as e:
        raise ConfigError(f"cannot load kubeconfig: {e}", field="kubeconfig") from e
    auth = None
    if cache is not None and first is not None and first.token is not None:
        auth = BearerAuth(cache)
        # The client only asks the hook when this key exists.
        cfg.api_key["BearerToken"] = f"Bearer {first.token}"
        cfg.refresh_api_key_hook = auth
    # Enough concurrent connections for a worker's thread pool; urllib3 defaults to 4.
    cfg.connection_pool_maxsize = connections
    # urllib3's default sends a GET that timed out up to three more times, so a call's
    # timeout was really four of them. Berth's callers own retrying (task backoff, the
    # watch's reconnect, the next pass), so a call is sent once and ends in its timeout.
    cfg.retries = False
    api = client.ApiClient(cfg)
    tls = share_context(api)
    return Kube(
        api=api,
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        timeout=timeout,
        auth=auth,
        tls=tls,
    )


def _credential_cache(
    resolved: ResolvedKubeconfig, *, exec_timeout_s: float
) -> CredentialCache | None:
    # Waiting threads give up a little after the plugin's own deadline: by then the
    # plugin has been killed and the fetching thread has its answer.
    wait_s = exec_timeout_s + 2 * KILL_WAIT_S
    plugin = resolved.exec_plugin
    if plugin is not None:
        return CredentialCache(lambda: plugin.run(timeout_s=exec_timeout_s), wait_s=wait_s)
    path = resolved.token_file
    if path is not None:
        return CredentialCache(lambda: read_token_file(path, now=time.time()), wait_s=wait_s)
    return None


def _put_certificate(resolved: ResolvedKubeconfig, credential: Credential) -> None:
    """A plugin's client certificate, as inline data for the client's loader."""
    user = resolved.config["users"][0]["user"]
    for key, pem in (
        ("client-certificate-data", credential.client_certificate_data),
        ("client-key-data", credential.client_key_data),
    ):
        user[key] = base64.b64encode(str(pem).encode()).decode()


def call(fn: Callable[..., T], *args: Any, timeout: float, **kwargs: Any) -> T:
    """Call a generated client method with a timeout, wrapping its errors."""
    kwargs.setdefault("_request_timeout", timeout)
    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        KUBE_ERRORS.labels(str(e.status or 0)).inc()
        raise wrap_api_exception(e) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        KUBE_ERRORS.labels("0").inc()
        raise KubeTemporaryError(f"Kubernetes API unreachable: {e}") from e


def wrap_api_exception(e: ApiException) -> KubeError:
    """Map an ApiException to Berth's error with the apiserver's own message."""
    status = int(e.status or 0)
    message, reason = _status_message(e)
    text = f"Kubernetes API {status} {reason}: {message}".strip()
    if status == 404:
        return KubeNotFound(text, status=status, reason=reason)
    if status == 409:
        return KubeConflict(text, status=status, reason=reason)
    if status == 403:
        return KubeForbidden(text, status=status, reason=reason)
    if status == 401:
        return KubeUnauthorized(text, status=status, reason=reason)
    if status in (0, 429) or status >= 500:
        return KubeTemporaryError(text, status=status, reason=reason)
    return KubeError(text, status=status, reason=reason)


def _status_message(e: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        return str(e.reason or ""), ""
    if not isinstance(body, dict):
        return str(e.reason or ""), ""
    return str(body.get("message", e.reason or "")), str(body.get("reason", ""))


def secret_data(text: str) -> str:
    """``text`` as a Secret's ``data`` value (base64 of its UTF-8)."""
    return base64.b64encode(text.encode()).decode()


def berth_labels(project: str, run: str, job: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED: MANAGED_BY, LABEL_PROJECT: project, LABEL_RUN: run}
    if job is not None:
        labels[LABEL_JOB] = job
    return labels
