"""Kubeconfigs as users have them, against the real local apiserver.

The exec plugins are real scripts (tests/credential_plugins.py) that log each
call; the apiserver accepts the static tokens they print, and the short
``expirationTimestamp`` is what the client under test must honour.
"""

from __future__ import annotations

import shutil
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from urllib3.exceptions import InsecureRequestWarning

from cli.local import cluster
from cli.local.pki import ensure_pki, issue_serving_pair
from shared import kube
from shared.clusters import ClusterRegistry
from shared.configuration.server import server_config_from_text
from shared.errors import (
    KubeCredentialError,
    KubeForbidden,
    KubeTemporaryError,
    KubeUnauthorized,
)
from tests.credential_plugins import exec_kubeconfig, plugin_calls, write_plugin

pytestmark = pytest.mark.integration


def _kubeconfig_file(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _kubeconfig_doc(server: str, ca: str, user: dict[str, Any]) -> dict[str, Any]:
    """One cluster, one user, one context: a kubeconfig as a dict."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }


def _exec_client(local_cluster: cluster.ClusterState, plugin: Path, **kwargs: Any) -> kube.Kube:
    data = exec_kubeconfig(
        server=local_cluster.apiserver_url,
        ca_file=local_cluster.ca_file,
        command=str(plugin),
        provide_cluster_info=True,
    )
    return kube.connect(kubeconfig_data=data, timeout=10.0, **kwargs)


def _list_namespaces(k: kube.Kube) -> int:
    return len(k.call(k.core.list_namespace).items)


def test_a_long_lived_client_runs_the_plugin_about_once_per_credential_lifetime(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    lifetime = 4.0
    plugin = write_plugin(
        tmp_path / "plugin", log=log, tokens=[local_cluster.admin_token], lifetime_s=lifetime
    )
    k = _exec_client(local_cluster, plugin)
    requests = [0] * 4
    deadline = time.monotonic() + 2.5 * lifetime

    def busy(i: int) -> None:
        while time.monotonic() < deadline:  # the workload itself, not a wait
            _list_namespaces(k)
            requests[i] += 1

    threads = [threading.Thread(target=busy, args=(i,)) for i in range(len(requests))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        k.close()

    calls = plugin_calls(log)
    # One at connect, then one each ~0.9 lifetime (timestamps have second precision,
    # so a credential lives 3-4 s here): 3-4 runs for 10 s, never one per request.
    assert sum(requests) > 40
    assert 2 <= len(calls) <= 5, f"{len(calls)} plugin runs for {sum(requests)} requests"
    info = calls[0].exec_info
    assert info is not None
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == local_cluster.apiserver_url
    assert info["spec"]["cluster"]["certificate-authority-data"]


def test_a_failing_plugin_is_an_error_with_its_stderr(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    plugin = write_plugin(
        tmp_path / "get-token",
        log=tmp_path / "calls.log",
        exit_code=3,
        stderr="error: the SSO session for profile prod has expired; run aws sso login",
    )

    with pytest.raises(KubeCredentialError) as caught:
        _exec_client(local_cluster, plugin)

    assert str(caught.value) == (
        "credential plugin get-token exited with status 3; its stderr: error: the SSO"
        " session for profile prod has expired; run aws sso login"
    )
    assert caught.value.plugin == "get-token"


def test_a_hanging_plugin_is_killed_within_the_timeout(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    # The sleep is the plugin's grandchild, holding the output pipe: killing only the
    # plugin would leave the read blocked for the whole sleep.
    plugin = write_plugin(
        tmp_path / "kubelogin",
        log=tmp_path / "calls.log",
        stderr="waiting for the browser",
        grandchild_sleep_s=60,
    )
    start = time.monotonic()

    with pytest.raises(KubeCredentialError, match="kubelogin did not finish within 1 s") as caught:
        _exec_client(local_cluster, plugin, exec_timeout_s=1.0)

    assert time.monotonic() - start < 5
    assert caught.value.stderr == "waiting for the browser"


def test_a_refused_token_is_refreshed_and_the_request_retried_once(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    # No expiry: kept until the apiserver refuses it; the second run has a good one.
    plugin = write_plugin(
        tmp_path / "plugin", log=log, tokens=["revoked", local_cluster.admin_token]
    )
    k = _exec_client(local_cluster, plugin)
    try:
        assert _list_namespaces(k) > 0
        assert _list_namespaces(k) > 0
    finally:
        k.close()

    assert len(plugin_calls(log)) == 2


def test_a_token_refused_after_a_refresh_is_an_unauthorized_error(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    plugin = write_plugin(tmp_path / "plugin", log=log, tokens=["revoked"])
    k = _exec_client(local_cluster, plugin)
    try:
        with pytest.raises(KubeUnauthorized, match="401"):
            _list_namespaces(k)
    finally:
        k.close()

    assert len(plugin_calls(log)) == 2  # at connect, and once after the 401


def test_a_plugin_client_certificate_signs_in(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    pki = Path(local_cluster.directory) / "pki"
    plugin = write_plugin(
        tmp_path / "plugin",
        log=tmp_path / "calls.log",
        certificate=(pki / "apiserver-kubelet-client.crt").read_text(),
        key=(pki / "apiserver-kubelet-client.key").read_text(),
        lifetime_s=3600,
    )
    k = _exec_client(local_cluster, plugin)
    try:
        assert _list_namespaces(k) > 0
    finally:
        k.close()


def test_a_rotated_token_file_is_read_again_when_the_old_token_is_refused(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    token = tmp_path / "sa" / "token"
    token.parent.mkdir()
    token.write_text("expired-projected-token\n")
    doc = _kubeconfig_doc(  # the token file relative to the kubeconfig
        local_cluster.apiserver_url, local_cluster.ca_file, {"tokenFile": "sa/token"}
    )
    path = _kubeconfig_file(tmp_path / "kubeconfig", doc)
    k = kube.connect(kubeconfig=path, timeout=10.0)
    try:
        token.write_text(f"{local_cluster.admin_token}\n")  # the kubelet rotated it

        assert _list_namespaces(k) > 0
    finally:
        k.close()


def test_certificate_files_are_found_relative_to_the_kubeconfig(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    pki = Path(local_cluster.directory) / "pki"
    home = tmp_path / "kube"
    (home / "certs").mkdir(parents=True)
    for name in ("ca.crt", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"):
        shutil.copyfile(pki / name, home / "certs" / name)
    user = {
        "client-certificate": "certs/apiserver-kubelet-client.crt",
        "client-key": "certs/apiserver-kubelet-client.key",
    }
    doc = _kubeconfig_doc(local_cluster.apiserver_url, "certs/ca.crt", user)
    path = _kubeconfig_file(home / "config", doc)

    k = kube.connect(kubeconfig=path, timeout=10.0)  # from a different working directory
    try:
        assert _list_namespaces(k) > 0
    finally:
        k.close()


def test_projects_on_one_cluster_share_one_client_built_from_several_kubeconfig_files(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    # The cluster and context in one file, the user (an exec plugin next to its own
    # file, named relatively) in another: KUBECONFIG-style "a:b".
    log = tmp_path / "calls.log"
    (tmp_path / "users" / "bin").mkdir(parents=True)
    write_plugin(
        tmp_path / "users" / "bin" / "token",
        log=log,
        tokens=[local_cluster.admin_token],
        lifetime_s=3600,
    )
    cluster_doc = exec_kubeconfig(
        server=local_cluster.apiserver_url, ca_file=local_cluster.ca_file, command="unused"
    )
    users = cluster_doc.pop("users")
    users[0]["user"]["exec"]["command"] = "./bin/token"
    clusters_file = _kubeconfig_file(tmp_path / "clusters" / "config", cluster_doc)
    users_file = _kubeconfig_file(
        tmp_path / "users" / "config", {"apiVersion": "v1", "kind": "Config", "users": users}
    )
    backend = {
        "type": "kubernetes",
        "kubeconfig": {"filename": f"{clusters_file}:{users_file}"},
    }
    server = server_config_from_text(
        yaml.safe_dump(
            {
                "projects": [
                    {"name": "alpha", "backends": [backend | {"namespace": "ns-a"}]},
                    {"name": "beta", "backends": [backend | {"namespace": "ns-b"}]},
                ]
            }
        )
    )
    registry = ClusterRegistry(server, request_timeout_s=10.0, exec_timeout_s=10.0)
    try:
        found: list[kube.Kube] = []
        threads = [
            threading.Thread(target=lambda p=p: found.append(registry.for_project(p).kube))
            for p in ("alpha", "beta", "alpha", "beta")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        a, b = registry.for_project("alpha"), registry.for_project("beta")

        assert a.kube is b.kube and all(k is a.kube for k in found)
        assert (a.namespace, b.namespace) == ("ns-a", "ns-b")
        assert _list_namespaces(a.kube) > 0
    finally:
        registry.close()
    assert len(plugin_calls(log)) == 1


def test_a_plugin_failing_at_connect_is_not_run_again_by_every_caller(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    plugin = write_plugin(
        tmp_path / "get-token", log=log, exit_code=1, stderr="no credentials in the environment"
    )
    doc = exec_kubeconfig(server="https://127.0.0.1:1", ca_file="", command=str(plugin))
    path = _kubeconfig_file(tmp_path / "kubeconfig", doc)
    backend = {"type": "kubernetes", "kubeconfig": {"filename": str(path)}}
    server = server_config_from_text(
        yaml.safe_dump({"projects": [{"name": "alpha", "backends": [backend]}]})
    )
    registry = ClusterRegistry(server, request_timeout_s=10.0, exec_timeout_s=10.0)
    try:
        for _ in range(5):  # five tasks in a row, within the failure's back-off
            with pytest.raises(KubeCredentialError, match="no credentials in the environment"):
                registry.for_project("alpha")
    finally:
        registry.close()

    assert len(plugin_calls(log)) == 1


def test_new_connections_share_one_tls_context_until_a_certificate_file_is_rewritten(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    """The client certificate is loaded once, not per connection (shared/kube/tls.py);
    a pair rewritten on disk (rotated by an agent) is what the next connection presents."""
    pki = ensure_pki(Path(local_cluster.directory) / "pki")
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    shutil.copyfile(pki.kubelet_client_cert, cert)  # group system:masters
    shutil.copyfile(pki.kubelet_client_key, key)
    user = {"client-certificate": str(cert), "client-key": str(key)}
    doc = _kubeconfig_doc(local_cluster.apiserver_url, str(pki.ca_cert), user)
    k = kube.connect(kubeconfig=_kubeconfig_file(tmp_path / "config", doc), timeout=10.0)
    pool = k.api.rest_client.pool_manager
    try:
        assert k.tls is not None
        for _ in range(3):
            pool.clear()  # every call on a new connection: a new TLS handshake
            assert _list_namespaces(k) > 0
        assert k.tls.builds == 1

        # An identity the cluster grants nothing: its own name, the same CA.
        issue_serving_pair(pki, "berth-test-nobody", [], cert, key)
        pool.clear()
        with pytest.raises(KubeForbidden, match="berth-test-nobody"):
            _list_namespaces(k)
        assert k.tls.builds == 2
    finally:
        k.close()


def test_insecure_skip_tls_verify_still_connects_without_a_ca(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    """With one shared TLS context the kubeconfig's ``insecure-skip-tls-verify`` must
    still mean no verification (CERT_NONE is 0, easy to take for "unset")."""
    doc = _kubeconfig_doc(local_cluster.apiserver_url, "", {"token": local_cluster.admin_token})
    cluster_entry = doc["clusters"][0]["cluster"]
    del cluster_entry["certificate-authority"]
    cluster_entry["insecure-skip-tls-verify"] = True
    k = kube.connect(kubeconfig=_kubeconfig_file(tmp_path / "config", doc), timeout=10.0)
    try:
        with pytest.warns(InsecureRequestWarning):  # urllib3 warns, as it should
            assert _list_namespaces(k) > 0
        assert k.tls is not None and k.tls.context().verify_mode == ssl.CERT_NONE
    finally:
        k.close()


def test_a_ca_that_did_not_sign_the_apiserver_is_refused(
    local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    other = ensure_pki(tmp_path / "other-pki")  # a CA of its own
    doc = _kubeconfig_doc(
        local_cluster.apiserver_url, str(other.ca_cert), {"token": local_cluster.admin_token}
    )
    k = kube.connect(kubeconfig=_kubeconfig_file(tmp_path / "config", doc), timeout=10.0)
    try:
        with pytest.raises(KubeTemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            _list_namespaces(k)
    finally:
        k.close()


def test_connect_all_builds_each_cluster_once_and_leaves_a_broken_one_to_its_first_use(
    local_cluster: cluster.ClusterState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The API calls it at start, so its first submission does not build a client.
    good_log, bad_log = tmp_path / "good.log", tmp_path / "bad.log"
    good = write_plugin(
        tmp_path / "good", log=good_log, tokens=[local_cluster.admin_token], lifetime_s=3600
    )
    bad = write_plugin(tmp_path / "bad", log=bad_log, exit_code=1, stderr="signed out")
    backends = {}
    for name, plugin in (("good", good), ("bad", bad)):
        doc = exec_kubeconfig(
            server=local_cluster.apiserver_url, ca_file=local_cluster.ca_file, command=str(plugin)
        )
        path = _kubeconfig_file(tmp_path / f"{name}-kube" / "config", doc)
        backends[name] = {"type": "kubernetes", "kubeconfig": {"filename": str(path)}}
    server = server_config_from_text(
        yaml.safe_dump(
            {
                "projects": [
                    {"name": "alpha", "backends": [backends["good"] | {"namespace": "a"}]},
                    {"name": "beta", "backends": [backends["good"] | {"namespace": "b"}]},
                    {"name": "gamma", "backends": [backends["bad"]]},
                ]
            }
        )
    )
    registry = ClusterRegistry(server, request_timeout_s=10.0, exec_timeout_s=10.0)
    try:
        registry.connect_all()
        assert len(plugin_calls(good_log)) == 1  # one client for both projects, built now
        assert len(plugin_calls(bad_log)) == 1
        assert "signed out" in caplog.text
        assert _list_namespaces(registry.for_project("beta").kube) > 0
        assert len(plugin_calls(good_log)) == 1  # the request used the client built before
        with pytest.raises(KubeCredentialError, match="signed out"):
            registry.for_project("gamma")
    finally:
        registry.close()
