"""Running a command in a pod's container and reading its output (the ``exec`` subresource).

The apiserver speaks the Kubernetes channel protocol over a WebSocket: each
message's first byte names its stream (1 stdout, 2 stderr, 3 the final status).
The client library's own helper swaps the shared ApiClient's transport for the
call, which other threads using that client would then take too; this opens its
own socket with the same URL, credential and TLS context, and a deadline on every read.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from typing import Any
from urllib.parse import urlencode, urlparse

import websocket

from shared.errors import (
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeTemporaryError,
    KubeUnauthorized,
)
from shared.kube import Kube
from shared.kube.tls import TlsFiles

_PROTOCOL = "v4.channel.k8s.io"
_STDOUT, _STDERR, _STATUS = 1, 2, 3


def exec_output(
    k: Kube,
    pod: str,
    namespace: str,
    *,
    container: str,
    command: list[str],
    timeout_s: float,
    limit_bytes: int,
) -> bytes:
    """``command``'s stdout, once it exited 0 within ``timeout_s``; KubeError otherwise
    (the pod or container gone, exec forbidden, a non-zero exit, more than
    ``limit_bytes`` of output, or the deadline)."""
    deadline = time.monotonic() + timeout_s
    try:
        sock = _connect(k, pod, namespace, container, command)
    except KubeUnauthorized:
        if k.auth is None or not k.auth.refused():
            raise
        sock = _connect(k, pod, namespace, container, command)  # with a fresh credential
    out = bytearray()
    err = bytearray()
    status: dict[str, object] | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KubeTemporaryError(f"exec in {pod} took longer than {timeout_s:g} s")
            sock.settimeout(left)
            try:
                opcode, data = sock.recv_data()
            except websocket.WebSocketConnectionClosedException:
                break
            except (websocket.WebSocketException, OSError, ValueError) as e:
                raise KubeTemporaryError(f"exec in {pod} broke off: {e}") from e
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == _STDOUT:
                out += payload
                if len(out) > limit_bytes:
                    raise KubeError(f"exec in {pod} printed more than {limit_bytes} bytes")
            elif channel == _STDERR:
                err += payload[: 4096 - len(err)]
            elif channel == _STATUS and payload:
                status = _status(payload)
    finally:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            sock.close(timeout=1)
        # close() does nothing once the server's close frame was answered (the
        # library then marks the socket unconnected but leaves it open).
        sock.shutdown()  # type: ignore[no-untyped-call]
    if status is None:
        raise KubeTemporaryError(f"exec in {pod} ended without a status")
    if status.get("status") != "Success":
        said = err.decode(errors="replace").strip() or status.get("message")
        raise KubeError(f"{command[0]} in {pod} failed: {said}")
    return bytes(out)


def _status(payload: bytes) -> dict[str, object]:
    try:
        status = json.loads(payload)
    except ValueError as e:
        raise KubeError(f"exec status is not JSON: {payload[:200]!r}") from e
    if not isinstance(status, dict):
        raise KubeError(f"exec status is not an object: {payload[:200]!r}")
    return status


def _connect(
    k: Kube, pod: str, namespace: str, container: str, command: list[str]
) -> websocket.WebSocket:
    cfg = k.api.configuration
    _, url, headers, _, _ = k.api.param_serialize(
        method="GET",
        resource_path="/api/v1/namespaces/{namespace}/pods/{name}/exec",
        path_params={"namespace": namespace, "name": pod},
        auth_settings=["BearerToken"],
    )
    query = [("container", container), ("stdout", "true"), ("stderr", "true")]
    query += [("command", word) for word in command]
    url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    header = [f"{name}: {value}" for name, value in headers.items() if name == "authorization"]
    # The client's own TLS context (shared/kube/tls.py: the same CA, certificate and
    # their rotation, and resumed sessions); through a proxy the client has none
    # shared, so one is built from the same files the same way.
    files = k.tls or TlsFiles(
        cert_reqs=ssl.CERT_REQUIRED if cfg.verify_ssl else ssl.CERT_NONE,
        ca_file=cfg.ssl_ca_cert,
        ca_data=cfg.ca_cert_data,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
    )
    sslopt: dict[str, object] = {"context": files.context()}
    if cfg.tls_server_name:
        sslopt["server_hostname"] = cfg.tls_server_name
    proxy: dict[str, Any] = {}
    if cfg.proxy:  # as every other call goes (kubeconfig proxy-url)
        parsed = urlparse(cfg.proxy)
        socks = parsed.scheme.startswith("socks")
        default_port = 1080 if socks else 443 if parsed.scheme == "https" else 80
        proxy = {
            "http_proxy_host": parsed.hostname,
            "http_proxy_port": parsed.port or default_port,
            "proxy_type": parsed.scheme if socks else "http",
        }
        if parsed.username:
            proxy["http_proxy_auth"] = (parsed.username, parsed.password or "")
    try:
        return websocket.create_connection(
            f"{url}?{urlencode(query)}",
            timeout=k.timeout,
            header=header,
            subprotocols=[_PROTOCOL],
            sslopt=sslopt,
            **proxy,
        )
    except websocket.WebSocketBadStatusException as e:
        if e.status_code == 401:
            raise KubeUnauthorized(f"exec in {pod}: the apiserver refused the credential") from e
        if e.status_code == 404:
            raise KubeNotFound(f"no pod {pod} to exec in") from e
        if e.status_code == 403:
            raise KubeForbidden(f"exec in {pod} is forbidden: grant pods/exec create") from e
        raise KubeError(f"exec in {pod} refused: {e}") from e
    except (websocket.WebSocketException, OSError, ValueError) as e:
        raise KubeTemporaryError(f"cannot exec in {pod}: {e}") from e
