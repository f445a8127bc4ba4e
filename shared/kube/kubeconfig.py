"""What a kubeconfig names for one context: cluster, user, and how the user signs in.

Files are merged as kubectl merges ``KUBECONFIG=a:b``: missing files are skipped,
and the first file to name a cluster, user, context or ``current-context`` wins
(the kubernetes client lets a later file's ``current-context`` win, which kubectl
does not). File references (``certificate-authority``, ``client-certificate``,
``client-key``, ``tokenFile``, an ``exec`` command with a slash) are relative to
the file that holds them, so they are made absolute here; inline kubeconfig data
has no file and keeps them relative to the working directory, as before.

The result is a one-context kubeconfig for the client's own loader (TLS, static
tokens, auth providers) with ``exec`` and ``tokenFile`` taken out: Berth handles
those two itself (:mod:`shared.kube.credentials`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.errors import ConfigError
from shared.kube.exec_plugin import ExecPlugin, exec_plugin_from_kubeconfig

_CLUSTER_FILES = ("certificate-authority",)
_USER_FILES = ("client-certificate", "client-key", "tokenFile")


@dataclass(frozen=True)
class ResolvedKubeconfig:
    config: dict[str, Any]
    """A kubeconfig with one context, its cluster and user, and absolute file paths."""
    context: str
    exec_plugin: ExecPlugin | None = None
    token_file: Path | None = None


def resolve(
    *, paths: str | None = None, data: dict[str, Any] | None = None, context: str | None = None
) -> ResolvedKubeconfig:
    """The kubeconfig ``data``, or the files in ``paths`` (``os.pathsep``-separated), for
    ``context`` (default: its ``current-context``); ConfigError naming what is missing."""
    merged = _Merged()
    if data is not None:
        merged.add(data, base_dir=None)
    else:
        _add_files(merged, paths or "")
    name = context or merged.current_context
    if not name:
        raise ConfigError("the kubeconfig names no context and none was given", field="kubeconfig")
    ctx = _entry(merged.contexts, name, "context")
    cluster_name = str(ctx.get("cluster") or "")
    cluster = _entry(merged.clusters, cluster_name, "cluster")
    user_name = ctx.get("user")
    user = _entry(merged.users, str(user_name), "user") if user_name else None
    exec_plugin: ExecPlugin | None = None
    token_file: Path | None = None
    if user is not None and not ({"token", "auth-provider"} & user.keys()):
        # The client's order: auth-provider, then token or tokenFile, then exec.
        if user.get("tokenFile"):
            token_file = Path(user.pop("tokenFile"))
            user.pop("exec", None)
        elif user.get("exec"):
            exec_plugin = exec_plugin_from_kubeconfig(
                user.pop("exec"), cluster=cluster, base_dir=merged.user_dirs.get(str(user_name))
            )
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "contexts": [{"name": name, "context": ctx}],
        "users": [{"name": str(user_name), "user": user}] if user is not None else [],
        "current-context": name,
    }
    return ResolvedKubeconfig(
        config=config, context=name, exec_plugin=exec_plugin, token_file=token_file
    )


class _Merged:
    def __init__(self) -> None:
        self.clusters: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.user_dirs: dict[str, Path] = {}
        self.current_context = ""

    def add(self, doc: dict[str, Any], *, base_dir: Path | None) -> None:
        for kind, key, files, into in (
            ("clusters", "cluster", _CLUSTER_FILES, self.clusters),
            ("users", "user", _USER_FILES, self.users),
            ("contexts", "context", (), self.contexts),
        ):
            for item in doc.get(kind) or []:
                name = str(item.get("name", ""))
                if name in into or not isinstance(item.get(key), dict):
                    continue
                into[name] = _absolute(dict(item[key]), files, base_dir)
                if kind == "users" and base_dir is not None:
                    self.user_dirs[name] = base_dir
        if not self.current_context:
            self.current_context = str(doc.get("current-context") or "")


def _add_files(merged: _Merged, paths: str) -> None:
    found = []
    empty = []
    for item in filter(None, paths.split(os.pathsep)):
        path = Path(item).expanduser()
        if not path.exists():
            continue  # kubectl skips missing files in KUBECONFIG
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read kubeconfig {path}: {e}", field="kubeconfig") from e
        if doc is None:
            empty.append(path)
            continue
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping", field="kubeconfig")
        merged.add(doc, base_dir=path.resolve().parent)
        found.append(path)
    if not found:
        what = f"{empty[0]} is empty" if empty else f"no file at {paths or '(nothing)'}"
        raise ConfigError(f"cannot load kubeconfig: {what}", field="kubeconfig")


def _absolute(
    entry: dict[str, Any], keys: tuple[str, ...], base_dir: Path | None
) -> dict[str, Any]:
    if base_dir is None:
        return entry
    for key in keys:
        value = entry.get(key)
        if value and not Path(value).is_absolute():
            entry[key] = str(base_dir / value)
    return entry


def _entry(entries: dict[str, dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    try:
        return dict(entries[name])
    except KeyError:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigError(
            f"the kubeconfig has no {what} {name!r} (it has: {known})", field="kubeconfig"
        ) from None
