"""A kubeconfig's ``exec`` credential plugin, run as client-go runs it, with a timeout.

The protocol (``client.authentication.k8s.io`` v1 and v1beta1):
https://kubernetes.io/docs/reference/access-authn-authz/authentication/#client-go-credential-plugins

The plugin gets ``KUBERNETES_EXEC_INFO`` (with the cluster when the kubeconfig asks
for ``provideClusterInfo``), no terminal (Berth is never interactive) and its own
session, so a plugin that hangs is killed with every process it started: killing only
the direct child would leave a grandchild holding the output pipe open, and reading
it would then block as long as the grandchild lives.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, KubeCredentialError
from shared.kube.credentials import Credential, parse_exec_credential

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
API_VERSIONS = (V1, V1BETA1)
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension passed to the plugin as ``spec.cluster.config``."""
STDERR_KEPT = 600
"""Characters of the plugin's stderr kept in an error: its last words say why."""
KILL_WAIT_S = 2.0
"""Seconds to collect a killed plugin's output; its processes die at once on SIGKILL."""


@dataclass(frozen=True)
class ExecPlugin:
    """One ``users[].user.exec`` entry, with the command path already resolved."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = V1
    cluster: dict[str, Any] | None = None
    """``spec.cluster`` of ``KUBERNETES_EXEC_INFO``; None unless ``provideClusterInfo``."""
    install_hint: str = ""

    @property
    def name(self) -> str:
        """How errors name the plugin: its command, without the directory."""
        return Path(self.command).name

    def run(self, *, timeout_s: float, clock: Callable[[], float] = time.time) -> Credential:
        """Run the plugin once; KubeCredentialError if it fails, hangs or prints no credential."""
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            proc = subprocess.Popen(
                [self.command, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            hint = f" ({self.install_hint.strip()})" if self.install_hint.strip() else ""
            raise KubeCredentialError(
                f"cannot start credential plugin {self.command}: {e.strerror}{hint}",
                plugin=self.name,
            ) from e
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stderr = _kill(proc)
            raise self._error(
                f"did not finish within {timeout_s:g} s and was killed", stderr
            ) from None
        if proc.returncode != 0:
            raise self._error(f"exited with status {proc.returncode}", stderr)
        try:
            output = json.loads(stdout)
        except ValueError:
            # Not echoed: what a plugin prints on stdout may well be a secret.
            raise self._error("printed something that is not JSON", stderr) from None
        if not isinstance(output, dict):
            raise self._error("printed JSON that is not an object", stderr)
        return parse_exec_credential(
            output, api_version=self.api_version, plugin=self.name, now=clock()
        )

    def _error(self, what: str, stderr: bytes) -> KubeCredentialError:
        tail = _tail(stderr)
        said = f"; its stderr: {tail}" if tail else " and wrote nothing to stderr"
        return KubeCredentialError(
            f"credential plugin {self.name} {what}{said}", plugin=self.name, stderr=tail
        )


def exec_plugin_from_kubeconfig(
    exec_: dict[str, Any], *, cluster: dict[str, Any], base_dir: Path | None
) -> ExecPlugin:
    """The plugin of a kubeconfig user's ``exec`` block; ConfigError if it is not usable.

    A ``command`` with a slash is relative to the kubeconfig's directory, as in
    client-go; a bare name is looked up on ``PATH``.
    """
    command = str(exec_.get("command") or "")
    if not command:
        raise ConfigError("exec has no command", field="kubeconfig")
    if "/" in command and not Path(command).is_absolute() and base_dir is not None:
        command = str(base_dir / command)
    api_version = str(exec_.get("apiVersion") or "")
    if api_version not in API_VERSIONS:
        raise ConfigError(
            f"exec apiVersion {api_version!r} is not supported; use {' or '.join(API_VERSIONS)}",
            field="kubeconfig",
        )
    if exec_.get("interactiveMode") == "Always":
        raise ConfigError(
            f"exec plugin {Path(command).name} needs a terminal (interactiveMode: Always),"
            " which a server never has; use a plugin mode that needs no prompt",
            field="kubeconfig",
        )
    env = tuple((str(e["name"]), str(e.get("value", ""))) for e in exec_.get("env") or [])
    return ExecPlugin(
        command=command,
        args=tuple(str(a) for a in exec_.get("args") or []),
        env=env,
        api_version=api_version,
        cluster=exec_cluster_info(cluster) if exec_.get("provideClusterInfo") else None,
        install_hint=str(exec_.get("installHint") or ""),
    )


def exec_cluster_info(cluster: dict[str, Any]) -> dict[str, Any]:
    """``spec.cluster`` for ``KUBERNETES_EXEC_INFO``, from a kubeconfig cluster entry."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression"):
        if key in cluster:
            info[key] = cluster[key]
    if cluster.get("certificate-authority-data"):
        info["certificate-authority-data"] = cluster["certificate-authority-data"]
    elif cluster.get("certificate-authority"):
        path = Path(cluster["certificate-authority"])
        try:
            info["certificate-authority-data"] = base64.b64encode(path.read_bytes()).decode()
        except OSError as e:
            raise ConfigError(
                f"cannot read certificate-authority {path}: {e.strerror}", field="kubeconfig"
            ) from e
    for extension in cluster.get("extensions") or []:
        if extension.get("name") == EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


def _kill(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGKILL the plugin's whole session and return what it wrote to stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
    try:
        return proc.communicate(timeout=KILL_WAIT_S)[1]
    except subprocess.TimeoutExpired:  # a grandchild left the session and keeps the pipes
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(timeout=KILL_WAIT_S)
        return b""


def _tail(stderr: bytes) -> str:
    text = " ".join(stderr.decode("utf-8", errors="replace").split())
    return text if len(text) <= STDERR_KEPT else "..." + text[-STDERR_KEPT:]
