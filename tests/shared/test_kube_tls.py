"""One TLS context per client (shared/kube/tls.py): built once, again when a file changes."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from cli.local.pki import Pki, ensure_pki, issue_serving_pair
from shared.kube.tls import TlsFiles, share_context


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
