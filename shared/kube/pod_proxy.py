"""HTTP to a port of a pod through the apiserver's ``pods/proxy``.

Berth's workers may run outside the cluster (the local stack, a server with a
kubeconfig), where pod addresses are not reachable; the apiserver reaches them
wherever Berth's kubeconfig reaches the apiserver. The generated client's
``connect_*_namespaced_pod_proxy_with_path`` methods send no body, so this calls
the shared ``ApiClient`` directly, with the same timeout and error mapping as
every other call (:meth:`shared.kube.Kube.call`). RBAC: ``pods/proxy`` with the
verb of each method (GET: get, POST: create, DELETE: delete), which
``tests/deploy/kube_calls.py`` reads from the calls of :func:`pod_request`.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import KubeTemporaryError
from shared.kube import Kube

# Bodies Berth reads this way are small JSON documents (a router's worker list).
MAX_BODY_BYTES = 1 << 20


def pod_request(
    k: Kube, namespace: str, pod: str, port: int, method: str, path: str, body: Any = None
) -> Any:
    """Send ``method path`` to ``pod``'s ``port``; its JSON answer, or None for an empty one."""
    resource = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
    response = k.call(
        k.api.call_api,
        resource,
        method,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    data = response.read(MAX_BODY_BYTES + 1)
    response.release_conn()
    if len(data) > MAX_BODY_BYTES:
        raise KubeTemporaryError(
            f"{method} {path} on pod {pod}: answer over {MAX_BODY_BYTES} bytes"
        )
    return json.loads(data) if data.strip() else None
