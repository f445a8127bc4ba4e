"""HTTP to a port of a pod through the apiserver's ``pods/proxy``.

Berth's workers may run outside the cluster (the local stack, a server with a
kubeconfig), where pod addresses are not reachable; the apiserver reaches them
wherever Berth's kubeconfig reaches the apiserver. The generated client's
``connect_*_namespaced_pod_proxy_with_path`` methods send no body, so this
serializes and sends the request on the shared ``ApiClient`` itself (as those
methods do inside), with the same timeout, credential and error mapping as every
other call (:meth:`shared.kube.Kube.call`). RBAC: ``pods/proxy`` with the
verb of each method (GET: get, POST: create, DELETE: delete), which
``tests/deploy/kube_calls.py`` reads from the calls of :func:`pod_request` (in the
runs namespace) and :func:`scrape_pod` (a GET in any namespace: the ClusterRole).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from shared.errors import KubeTemporaryError
from shared.kube import Kube

# Bodies Berth reads this way are small documents: a router's worker list, an
# exporter's metrics (about 100 KiB for an 8-GPU node).
MAX_BODY_BYTES = 4 << 20


def pod_request(
    k: Kube, namespace: str, pod: str, port: int, method: str, path: str, body: Any = None
) -> Any:
    """Send ``method path`` to ``pod``'s ``port``; its JSON answer, or None for an empty one."""
    data = k.call(_send, k, _resource(namespace, pod, port, path), method, body, "application/json")
    return json.loads(data) if data.strip() else None


def scrape_pod(k: Kube, namespace: str, pod: str, port: int, path: str) -> str:
    """``GET path`` on a pod of any namespace (an exporter's ``/metrics``): its text."""
    data = k.call(_send, k, _resource(namespace, pod, port, path), "GET", None, "text/plain")
    return data.decode("utf-8", "replace")


def _resource(namespace: str, pod: str, port: int, path: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"


def _send(
    k: Kube, resource: str, method: str, body: Any, accept: str, *, _request_timeout: float
) -> bytes:
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = k.api.param_serialize(
        method=method,
        resource_path=resource,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = k.api.call_api(*request, _request_timeout=_request_timeout)
    data = response.read() or b""
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)  # Kube.call maps it to Berth's errors
    if len(data) > MAX_BODY_BYTES:
        raise KubeTemporaryError(f"{method} {resource}: an answer over {MAX_BODY_BYTES} bytes")
    return bytes(data)
