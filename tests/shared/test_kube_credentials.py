"""Exec and tokenFile credentials: parsing, caching, expiry and kubeconfig resolution.

No apiserver here (tests/integration/test_kube_credentials.py has it); the clock is
a plain counter the test moves, and fetches are plain functions that count calls.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.errors import ConfigError, KubeCredentialError
from shared.kube.credentials import (
    FAILURE_BACKOFF_S,
    TOKEN_FILE_REREAD_S,
    Credential,
    CredentialCache,
    parse_exec_credential,
    read_token_file,
    refresh_skew,
)
from shared.kube.exec_plugin import V1, V1BETA1, exec_plugin_from_kubeconfig
from shared.kube.kubeconfig import resolve

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Fetches:
    """A fetch that hands out ``token-1``, ``token-2``, ... living ``lifetime`` seconds."""

    def __init__(self, clock: Clock, lifetime: float | None = 30.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.broken = False

    def __call__(self) -> Credential:
        self.calls += 1
        self.entered.set()
        if self.broken:
            raise KubeCredentialError("credential plugin p exited with status 1", plugin="p")
        if self.gate is not None:
            assert self.gate.wait(10)
        output = _exec_credential(
            V1, f"token-{self.calls}", None if self.lifetime is None else self.lifetime
        )
        return parse_exec_credential(output, api_version=V1, plugin="p", now=self.clock.now)


def _exec_credential(api_version: str, token: str, lifetime: float | None) -> dict[str, Any]:
    status: dict[str, Any] = {"token": token}
    if lifetime is not None:
        expiry = datetime.fromtimestamp(T0 + lifetime, UTC)
        status["expirationTimestamp"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": api_version, "kind": "ExecCredential", "status": status}


# --- skew and parsing ---------------------------------------------------------------------


def test_the_skew_is_a_tenth_of_a_short_lifetime_and_at_most_a_minute() -> None:
    assert refresh_skew(30) == pytest.approx(3)
    assert refresh_skew(900) == 60  # an EKS token: refreshed a minute early, not five
    assert refresh_skew(3600) == 60
    assert refresh_skew(-5) == 0


def test_a_v1_token_is_refreshed_a_tenth_of_its_lifetime_before_it_expires() -> None:
    cred = parse_exec_credential(_exec_credential(V1, "t", 30), api_version=V1, plugin="p", now=T0)

    assert cred.token == "t"
    assert cred.expires_at == T0 + 30
    assert cred.refresh_at == pytest.approx(T0 + 27)
    assert not cred.due(T0 + 26.9)
    assert cred.due(T0 + 27)
    assert not cred.expired(T0 + 29.9)


def test_a_v1beta1_credential_with_fractional_seconds_parses() -> None:
    output = _exec_credential(V1BETA1, "t", None)
    output["status"]["expirationTimestamp"] = "2023-11-14T22:13:50.123456789+00:00"

    cred = parse_exec_credential(output, api_version=V1BETA1, plugin="p", now=T0)

    assert cred.expires_at == pytest.approx(T0 + 30.123456, abs=1e-5)


def test_a_token_without_expiry_is_kept_until_the_apiserver_refuses_it() -> None:
    cred = parse_exec_credential(
        _exec_credential(V1, "t", None), api_version=V1, plugin="p", now=T0
    )

    assert cred.refresh_at is None and cred.expires_at is None
    assert not cred.due(T0 + 10**9)


def test_a_client_certificate_credential_parses() -> None:
    output = {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "status": {"clientCertificateData": "CERT", "clientKeyData": "KEY"},
    }

    cred = parse_exec_credential(output, api_version=V1, plugin="p", now=T0)

    assert (cred.token, cred.client_certificate_data, cred.client_key_data) == (
        None,
        "CERT",
        "KEY",
    )


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ({"apiVersion": V1BETA1, "kind": "ExecCredential", "status": {"token": "t"}}, "apiVersion"),
        ({"apiVersion": V1, "kind": "Secret", "status": {"token": "t"}}, "kind"),
        ({"apiVersion": V1, "kind": "ExecCredential"}, "no status"),
        ({"apiVersion": V1, "kind": "ExecCredential", "status": {}}, "neither a token"),
        (
            {"apiVersion": V1, "kind": "ExecCredential", "status": {"clientCertificateData": "C"}},
            "neither a token",
        ),
        (
            {
                "apiVersion": V1,
                "kind": "ExecCredential",
                "status": {"token": "t", "expirationTimestamp": "tomorrow"},
            },
            "RFC 3339",
        ),
    ],
)
def test_output_without_a_usable_credential_is_an_error_naming_the_plugin(
    output: dict[str, Any], problem: str
) -> None:
    with pytest.raises(KubeCredentialError, match=problem) as caught:
        parse_exec_credential(output, api_version=V1, plugin="aws", now=T0)

    assert "credential plugin aws" in str(caught.value)
    assert caught.value.plugin == "aws"


# --- the cache ------------------------------------------------------------------------------


def test_a_fresh_credential_is_fetched_once_however_often_it_is_asked_for() -> None:
    clock = Clock()
    fetches = Fetches(clock)
    cache = CredentialCache(fetches, wait_s=5, clock=clock)

    tokens = set()
    for step in range(270):  # one request every 0.1 s until 27 s, when it is due
        clock.now = T0 + step * 0.1
        tokens.add(cache.get().token)

    assert fetches.calls == 1
    assert tokens == {"token-1"}


def test_a_due_credential_is_fetched_again_once() -> None:
    clock = Clock()
    fetches = Fetches(clock)
    cache = CredentialCache(fetches, wait_s=5, clock=clock)
    cache.get()

    clock.now = T0 + 27
    first = cache.get()
    second = cache.get()

    assert fetches.calls == 2
    assert first.token == second.token == "token-2"


def test_threads_that_find_no_credential_wait_for_one_fetch() -> None:
    clock = Clock()
    fetches = Fetches(clock)
    fetches.gate = threading.Event()
    cache = CredentialCache(fetches, wait_s=10, clock=clock)
    got: list[str | None] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get().token)) for _ in range(8)]

    for t in threads:
        t.start()
    assert fetches.entered.wait(10)
    fetches.gate.set()
    for t in threads:
        t.join(10)

    assert fetches.calls == 1
    assert got == ["token-1"] * 8


def test_while_one_thread_refreshes_a_due_credential_the_others_keep_using_it() -> None:
    clock = Clock()
    fetches = Fetches(clock)
    cache = CredentialCache(fetches, wait_s=10, clock=clock)
    cache.get()
    clock.now = T0 + 28  # due, not expired
    fetches.gate = threading.Event()
    fetches.entered.clear()
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    assert fetches.entered.wait(10)

    during = cache.get().token  # does not wait for the refresh in flight

    fetches.gate.set()
    refresher.join(10)
    assert during == "token-1"
    assert cache.get().token == "token-2"
    assert fetches.calls == 2


def test_a_refused_credential_is_dropped_and_the_next_get_fetches_a_new_one() -> None:
    clock = Clock()
    fetches = Fetches(clock, lifetime=None)
    cache = CredentialCache(fetches, wait_s=5, clock=clock)
    refused = cache.get()

    cache.invalidate(refused)

    assert cache.get().token == "token-2"


def test_a_late_refusal_of_an_old_credential_does_not_drop_its_successor() -> None:
    clock = Clock()
    fetches = Fetches(clock, lifetime=None)
    cache = CredentialCache(fetches, wait_s=5, clock=clock)
    old = cache.get()
    cache.invalidate(old)
    cache.get()

    cache.invalidate(old)

    assert cache.get().token == "token-2"
    assert fetches.calls == 2


def test_a_failing_fetch_is_retried_only_after_a_pause() -> None:
    clock = Clock()
    calls = []

    def failing() -> Credential:
        calls.append(clock.now)
        raise KubeCredentialError("credential plugin p exited with status 1", plugin="p")

    cache = CredentialCache(failing, wait_s=5, clock=clock)
    for _ in range(3):
        with pytest.raises(KubeCredentialError, match="exited with status 1"):
            cache.get()
    clock.now = T0 + FAILURE_BACKOFF_S
    with pytest.raises(KubeCredentialError):
        cache.get()

    assert calls == [T0, T0 + FAILURE_BACKOFF_S]


def test_a_failing_refresh_keeps_the_still_valid_credential() -> None:
    clock = Clock()
    fetches = Fetches(clock)
    cache = CredentialCache(fetches, wait_s=5, clock=clock)
    cache.get()

    fetches.broken = True  # the plugin breaks after the first credential
    clock.now = T0 + 28

    assert cache.get().token == "token-1"
    clock.now = T0 + 30  # expired now: nothing left to fall back on
    with pytest.raises(KubeCredentialError):
        cache.get()


# --- tokenFile ------------------------------------------------------------------------------


def test_a_token_file_is_read_again_after_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    path.write_text("first\n")
    cache = CredentialCache(lambda: read_token_file(path, now=clock.now), wait_s=5, clock=clock)
    assert cache.get().token == "first"

    path.write_text("second\n")  # the kubelet rotated a projected token
    clock.now = T0 + TOKEN_FILE_REREAD_S - 1
    assert cache.get().token == "first"
    clock.now = T0 + TOKEN_FILE_REREAD_S
    assert cache.get().token == "second"


def test_a_missing_or_empty_token_file_is_a_credential_error(tmp_path: Path) -> None:
    with pytest.raises(KubeCredentialError, match="cannot read"):
        read_token_file(tmp_path / "absent", now=T0)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(KubeCredentialError, match="is empty"):
        read_token_file(tmp_path / "empty", now=T0)


# --- kubeconfig resolution ------------------------------------------------------------------


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _kubeconfig(
    name: str, user: dict[str, Any], *, cluster: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster or {"server": f"https://{name}:6443"}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def test_several_files_merge_and_the_first_current_context_wins(tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "config", _kubeconfig("a", {"token": "ta"}))
    b = _write(tmp_path / "b" / "config", _kubeconfig("b", {"token": "tb"}))

    first = resolve(paths=f"{a}:{tmp_path / 'missing'}:{b}")
    other = resolve(paths=f"{a}:{b}", context="b")

    assert first.context == "a"
    assert first.config["users"][0]["user"] == {"token": "ta"}
    assert other.config["clusters"][0]["cluster"]["server"] == "https://b:6443"


def test_file_references_are_relative_to_the_file_that_holds_them(tmp_path: Path) -> None:
    a = _write(
        tmp_path / "a" / "config",
        _kubeconfig(
            "a",
            {"client-certificate": "pki/user.crt", "client-key": "/abs/user.key"},
            cluster={"server": "https://a", "certificate-authority": "pki/ca.crt"},
        ),
    )
    b = _write(tmp_path / "b" / "config", _kubeconfig("b", {"tokenFile": "token"}))

    in_a = resolve(paths=f"{b}:{a}", context="a")
    in_b = resolve(paths=f"{b}:{a}")

    assert in_a.config["clusters"][0]["cluster"]["certificate-authority"] == str(
        tmp_path / "a" / "pki" / "ca.crt"
    )
    assert in_a.config["users"][0]["user"] == {
        "client-certificate": str(tmp_path / "a" / "pki" / "user.crt"),
        "client-key": "/abs/user.key",
    }
    assert in_b.token_file == tmp_path / "b" / "token"
    assert in_b.config["users"][0]["user"] == {}


def test_an_exec_user_becomes_berths_plugin_and_leaves_the_clients_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"CA PEM")
    exec_ = {
        "apiVersion": V1,
        "command": "./bin/get-token",
        "args": ["--cluster", "x"],
        "env": [{"name": "REGION", "value": "eu"}],
        "provideClusterInfo": True,
        "interactiveMode": "Never",
    }
    cluster = {
        "server": "https://x",
        "certificate-authority": "ca.crt",
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}],
    }
    path = _write(tmp_path / "config", _kubeconfig("x", {"exec": exec_}, cluster=cluster))

    resolved = resolve(paths=str(path))

    plugin = resolved.exec_plugin
    assert plugin is not None
    assert plugin.command == str(tmp_path / "bin" / "get-token")
    assert plugin.args == ("--cluster", "x")
    assert plugin.env == (("REGION", "eu"),)
    assert plugin.cluster == {
        "server": "https://x",
        "certificate-authority-data": base64.b64encode(b"CA PEM").decode(),
        "config": {"a": 1},
    }
    assert resolved.config["users"][0]["user"] == {}


def test_a_static_token_wins_over_exec_as_in_the_kubernetes_client() -> None:
    data = _kubeconfig("x", {"token": "t", "exec": {"apiVersion": V1, "command": "p"}})

    resolved = resolve(data=data)

    assert resolved.exec_plugin is None
    assert resolved.config["users"][0]["user"]["token"] == "t"


@pytest.mark.parametrize(
    ("exec_", "problem"),
    [
        ({"apiVersion": V1}, "no command"),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "p"}, "apiVersion"),
        ({"apiVersion": V1, "command": "p", "interactiveMode": "Always"}, "terminal"),
    ],
)
def test_an_unusable_exec_block_is_a_config_error(exec_: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        exec_plugin_from_kubeconfig(exec_, cluster={"server": "https://x"}, base_dir=None)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update({"current-context": ""}), "names no context"),
        (lambda d: d["contexts"][0]["context"].update({"cluster": "gone"}), "no cluster 'gone'"),
        (lambda d: d["contexts"][0]["context"].update({"user": "gone"}), "no user 'gone'"),
    ],
)
def test_a_kubeconfig_missing_what_the_context_names_is_a_config_error(
    change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    data = _kubeconfig("x", {"token": "t"})
    change(data)

    with pytest.raises(ConfigError, match=problem):
        resolve(data=data)


def test_no_kubeconfig_file_at_all_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load kubeconfig: no file at"):
        resolve(paths=f"{tmp_path / 'a'}:{tmp_path / 'b'}")


def test_an_empty_kubeconfig_file_says_it_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "config"
    empty.write_text("")
    with pytest.raises(ConfigError, match=f"cannot load kubeconfig: {empty} is empty"):
        resolve(paths=str(empty))
