"""One TLS context per client (shared/kube/tls.py): built once, again when a file changes;
new connections resume the server's last session."""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3
from kubernetes import client
from urllib3.util.ssl_ import create_urllib3_context

from cli.local import cluster
from cli.local.pki import Pki, ensure_pki, issue_serving_pair
from shared import kube
from shared.kube.tls import ResumingContext, TlsFiles, share_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def _files(pki: Pki, directory: Path) -> TlsFiles:
    cert, key = directory / "client.crt", directory / "client.key"
    cert.write_bytes(pki.kubelet_client_cert.read_bytes())
    key.write_bytes(pki.kubelet_client_key.read_bytes())
    return TlsFiles(
        cert_reqs=ssl.CERT_REQUIRED,
        ca_file=str(pki.ca_cert),
        cert_file=str(cert),
        key_file=str(key),
    )


def test_the_context_is_built_once_while_the_files_stay(pki: Pki, tmp_path: Path) -> None:
    files = _files(pki, tmp_path)
    first = files.context()
    assert all(files.context() is first for _ in range(5))
    assert files.builds == 1
    assert first.verify_mode == ssl.CERT_REQUIRED


def test_a_rewritten_certificate_builds_a_new_context(pki: Pki, tmp_path: Path) -> None:
    files = _files(pki, tmp_path)
    first = files.context()
    issue_serving_pair(pki, "someone-else", [], tmp_path / "client.crt", tmp_path / "client.key")
    second = files.context()
    assert second is not first
    assert files.builds == 2
    assert files.context() is second


def test_a_touched_file_is_a_change(pki: Pki, tmp_path: Path) -> None:
    files = _files(pki, tmp_path)
    first = files.context()
    stat = os.stat(tmp_path / "client.key")
    os.utime(tmp_path / "client.key", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert files.context() is not first


def test_a_missing_file_fails_the_connection_that_needs_it(pki: Pki, tmp_path: Path) -> None:
    files = _files(pki, tmp_path)
    (tmp_path / "client.crt").unlink()
    with pytest.raises(OSError):
        files.context()


def test_without_verification_no_ca_is_needed(tmp_path: Path) -> None:
    files = TlsFiles(cert_reqs=ssl.CERT_NONE)
    assert files.context().verify_mode == ssl.CERT_NONE


def test_a_client_behind_a_proxy_keeps_urllib3s_own_tls() -> None:
    cfg = client.Configuration()
    cfg.host = "https://203.0.113.9:6443"
    cfg.proxy = "http://127.0.0.1:3128"
    api = client.ApiClient(cfg)
    try:
        assert share_context(api) is None
        manager = api.rest_client.pool_manager
        assert isinstance(manager, urllib3.ProxyManager)
        assert "https" not in manager.pool_classes_by_scheme or (
            manager.pool_classes_by_scheme["https"] is urllib3.HTTPSConnectionPool
        )
    finally:
        api.close()


def test_a_direct_client_loads_its_ca_once_not_per_connection(pki: Pki) -> None:
    cfg = client.Configuration()
    cfg.ssl_ca_cert = str(pki.ca_cert)
    api = client.ApiClient(cfg)
    try:
        files = share_context(api)
        assert files is not None and files.ca_file == str(pki.ca_cert)
        pool = api.rest_client.pool_manager.connection_from_url("https://203.0.113.9:6443")
        assert pool.ca_certs is None  # urllib3 would load it into the context per connection
        assert issubclass(pool.ConnectionCls, urllib3.connection.HTTPSConnection)
        assert pool.ConnectionCls is not urllib3.connection.HTTPSConnection
    finally:
        api.close()


# --- session resumption -------------------------------------------------------------------


def test_the_context_is_urllib3s_except_that_it_asks_for_session_tickets(pki: Pki) -> None:
    ours = TlsFiles(cert_reqs=ssl.CERT_REQUIRED, ca_file=str(pki.ca_cert)).context()
    theirs = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    assert theirs.options & ssl.OP_NO_TICKET and not ours.options & ssl.OP_NO_TICKET
    assert ours.options | ssl.OP_NO_TICKET == theirs.options
    for name in (
        "minimum_version",
        "maximum_version",
        "verify_flags",
        "verify_mode",
        "check_hostname",
        "hostname_checks_common_name",
        "post_handshake_auth",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    unverified = TlsFiles(cert_reqs=ssl.CERT_NONE).context()
    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname


def _new_connections(k: kube.Kube, n: int) -> ResumingContext:
    """``n`` calls, each on a new connection; the context they shared."""
    for _ in range(n):
        k.call(k.core.list_namespace, limit=1)
        k.api.rest_client.pool_manager.clear()  # closes the connection: the next is new
    assert k.tls is not None
    return k.tls.context()


def test_new_connections_to_the_apiserver_resume_its_session(
    local_cluster: cluster.ClusterState,
) -> None:
    k = kube.connect(kubeconfig=Path(local_cluster.kubeconfig), timeout=10.0)
    try:
        context = _new_connections(k, 4)
        # The first is a full handshake; each later one offers the last ticket, and the
        # apiserver (Go's TLS, tickets on by default) takes it.
        assert (context.handshakes, context.resumed) == (4, 3)
    finally:
        k.close()


def test_a_rebuilt_context_starts_with_a_full_handshake(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    k = kube.connect(kubeconfig=Path(local_cluster.kubeconfig), timeout=10.0)
    try:
        first = _new_connections(k, 2)
        assert first.resumed == 1 and k.tls is not None and k.tls.ca_file
        ca = Path(k.tls.ca_file)
        stat = ca.stat()  # a rotated CA bundle: a new context, and sessions of the old
        os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # one are not its
        second = _new_connections(k, 3)
        assert second is not first
        assert (second.handshakes, second.resumed) == (3, 2)
    finally:
        k.close()


def test_a_server_that_gives_no_tickets_gets_full_handshakes(pki: Pki, tmp_path: Path) -> None:
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(pki.serving_cert, pki.serving_key)
    served.num_tickets = 0  # TLS 1.3 with no session tickets
    with _https_server(served) as port:
        cfg = client.Configuration()
        cfg.host = f"https://127.0.0.1:{port}"
        cfg.ssl_ca_cert = str(pki.ca_cert)
        api = client.ApiClient(cfg)
        try:
            files = share_context(api)
            assert files is not None
            manager = api.rest_client.pool_manager
            for _ in range(3):
                assert manager.request("GET", cfg.host, timeout=5.0).status == 200
                manager.clear()
            assert (files.context().handshakes, files.context().resumed) == (3, 0)
        finally:
            api.close()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def _https_server(context: ssl.SSLContext) -> Iterator[int]:
    """A real OpenSSL server on loopback (its own thread, stopped on exit); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)
