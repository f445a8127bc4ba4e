"""Exec credential plugins for tests and benches: real scripts that log every call.

Each plugin is a small Python script. It appends one line per call to its log
(the time, the pid that ran it and the ``KUBERNETES_EXEC_INFO`` it got), so a test counts calls by
reading the log, and prints an ``ExecCredential`` whose token the local
apiserver accepts (one of the static tokens of ``--token-auth-file``) with an
``expirationTimestamp`` as near as the test wants: the apiserver does not know
about that expiry, the client under test is the one that must honour it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

V1 = "client.authentication.k8s.io/v1"

_SCRIPT = """\
#!{python}
import datetime, json, os, sys, time
log = {log!r}
with open(log, "a") as f:
    f.write(json.dumps([time.time(), os.getppid(), os.environ.get("KUBERNETES_EXEC_INFO")]) + "\\n")
    f.flush()
calls = sum(1 for _ in open(log))
spec = {spec!r}
if spec["stderr"]:
    sys.stderr.write(spec["stderr"] + "\\n")
if spec["grandchild_sleep_s"]:
    os.system("sleep %s" % spec["grandchild_sleep_s"])  # holds our stdout pipe open
if spec["sleep_s"]:
    time.sleep(spec["sleep_s"])
if spec["exit_code"]:
    sys.exit(spec["exit_code"])
tokens = spec["tokens"]
status = {{"token": tokens[min(calls, len(tokens)) - 1]}}
if spec["certificate"]:
    status = {{"clientCertificateData": spec["certificate"], "clientKeyData": spec["key"]}}
if spec["lifetime_s"] is not None:
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=spec["lifetime_s"]
    )
    status["expirationTimestamp"] = expiry.isoformat().replace("+00:00", "Z")
print(json.dumps({{"apiVersion": spec["api_version"], "kind": "ExecCredential", "status": status}}))
"""


def write_plugin(
    path: Path,
    *,
    log: Path,
    tokens: list[str] | None = None,
    lifetime_s: float | None = None,
    sleep_s: float = 0.0,
    grandchild_sleep_s: float = 0.0,
    exit_code: int = 0,
    stderr: str = "",
    certificate: str = "",
    key: str = "",
    api_version: str = V1,
) -> Path:
    """Write an executable plugin script at ``path``; call N prints ``tokens[N-1]``
    (the last one from then on) valid for ``lifetime_s`` seconds (None: no expiry)."""
    spec: dict[str, Any] = {
        "tokens": tokens or [""],
        "lifetime_s": lifetime_s,
        "sleep_s": sleep_s,
        "grandchild_sleep_s": grandchild_sleep_s,
        "exit_code": exit_code,
        "stderr": stderr,
        "certificate": certificate,
        "key": key,
        "api_version": api_version,
    }
    path.write_text(_SCRIPT.format(python=sys.executable, log=str(log), spec=spec))
    path.chmod(0o755)
    return path


@dataclass(frozen=True)
class PluginCall:
    at: float
    """Epoch seconds."""
    parent_pid: int
    """The process that ran the plugin."""
    exec_info: dict[str, Any] | None
    """``KUBERNETES_EXEC_INFO`` as the plugin got it."""


def plugin_calls(log: Path) -> list[PluginCall]:
    """Every call so far, oldest first."""
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        when, parent, info = json.loads(line)
        calls.append(PluginCall(float(when), int(parent), json.loads(info) if info else None))
    return calls


def exec_kubeconfig(
    *,
    server: str,
    ca_file: str,
    command: str,
    provide_cluster_info: bool = False,
    api_version: str = V1,
) -> dict[str, Any]:
    """A kubeconfig whose only user signs in with the exec plugin ``command``."""
    exec_: dict[str, Any] = {
        "apiVersion": api_version,
        "command": command,
        "interactiveMode": "Never",
        "provideClusterInfo": provide_cluster_info,
    }
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority": ca_file}}
        ],
        "users": [{"name": "u", "user": {"exec": exec_}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
