"""The one door to the Kubernetes API: client construction and error wrapping.

Every call goes through :func:`call`, which adds the request timeout and turns
the client's ``ApiException`` and urllib3 errors into Berth's own
:class:`~shared.errors.KubeError` family, so no library error leaks upwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeTemporaryError,
)
from shared.metrics import KUBE_ERRORS

T = TypeVar("T")

# Label keys on every object Berth creates; selectors and teardown rely on them.
LABEL_PROJECT = "berth.dev/project"
LABEL_RUN = "berth.dev/run"
LABEL_JOB = "berth.dev/job"
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

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call(fn, *args, timeout=self.timeout, **kwargs)

    def close(self) -> None:
        self.api.close()


def connect(
    *,
    kubeconfig: Path | None = None,
    kubeconfig_data: dict[str, Any] | None = None,
    context: str | None = None,
    timeout: float = 10.0,
) -> Kube:
    """Build clients the way kubectl would: ``~``, ``KUBECONFIG``, current-context, exec auth."""
    cfg = client.Configuration()
    try:
        if kubeconfig_data is not None:
            loader = config.kube_config.KubeConfigLoader(
                config_dict=kubeconfig_data, active_context=context
            )
            loader.load_and_set(cfg)
        else:
            path = str(kubeconfig.expanduser()) if kubeconfig else None
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except (ConfigException, OSError, ValueError) as e:
        raise ConfigError(f"cannot load kubeconfig: {e}", field="kubeconfig") from e
    # Enough concurrent connections for a worker's thread pool; urllib3 defaults to 4.
    cfg.connection_pool_maxsize = 32
    api = client.ApiClient(cfg)
    return Kube(
        api=api,
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        timeout=timeout,
    )


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


def berth_labels(project: str, run: str, job: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED: MANAGED_BY, LABEL_PROJECT: project, LABEL_RUN: run}
    if job is not None:
        labels[LABEL_JOB] = job
    return labels
