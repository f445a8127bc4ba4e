"""A run's code in its pods: Secrets holding the archive, a volume, a few shell lines.

The archive (``shared/state/code.py``) is cut into Secrets named after the run
(``berth-<project>-<run>-code-<run id>-<i>``), created once per run and adopted on a
second delivery; every pod of the run mounts them through one projected volume,
so each node of a multi-node task gets the same bytes with no network access.
Before anything else, the pod's script joins the parts, unpacks them in a
staging directory and copies each entry to its container path
(:func:`shared.configuration.code.target_path`); a repo lands in the working
directory unless it names a path.
"""

from __future__ import annotations

import base64
from typing import Any

from shared import kube
from shared.configuration.code import DEFAULT_WORKING_DIR, target_path
from shared.kube.names import object_name
from shared.state.code import chunks
from shared.state.records import Run

CODE_MOUNT = "/berth/code"
_STAGING = "/tmp/.berth-code"


def secret_names(run: Run, parts: int) -> list[str]:
    """Named by run id too: a later run of the same name must never adopt these."""
    return [f"{secret_prefix(run)}{i}" for i in range(parts)]


def secret_prefix(run: Run) -> str:
    # Imported here: podspec imports this module to build the pod.
    return object_name(run.project, run.name, f"code-{run.id[:8]}") + "-"


def code_secrets(run: Run, data: bytes) -> list[dict[str, Any]]:
    """The Secrets holding ``data``, in order; labelled so teardown deletes them with the run."""
    parts = chunks(data)
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": kube.berth_labels(run.project, run.name)},
            "type": "Opaque",
            "data": {"part": base64.b64encode(part).decode()},
        }
        for name, part in zip(secret_names(run, len(parts)), parts, strict=True)
    ]


def volume(run: Run, parts: int) -> dict[str, Any]:
    """One projected volume of every part, as ``part-000``, ``part-001``, ... in order."""
    return {
        "name": "berth-code",
        "projected": {
            "sources": [
                {"secret": {"name": name, "items": [{"key": "part", "path": f"part-{i:03}"}]}}
                for i, name in enumerate(secret_names(run, parts))
            ]
        },
    }


def working_dir(conf: Any) -> str | None:
    """The container's working directory: dstack's ``/workflow`` when code comes along."""
    explicit = getattr(conf, "working_dir", None)
    if explicit:
        return str(explicit)
    return DEFAULT_WORKING_DIR if _entries(conf) else None


def unpack_lines(conf: Any) -> list[str]:
    """Shell lines that put each entry of the archive at its container path."""
    entries = _entries(conf)
    if not entries:
        return []
    workdir = working_dir(conf) or DEFAULT_WORKING_DIR
    lines = [
        f"rm -rf {_STAGING} && mkdir -p {_STAGING}",
        f"cat {CODE_MOUNT}/part-* | tar -xzf - -C {_STAGING}",
    ]
    for index, (kind, spec) in enumerate(entries):
        default = "." if kind == "repo" else spec.local_path.rstrip("/").rsplit("/", 1)[-1]
        if (kind == "file" and spec.local_path in (".", "..")) or default.startswith("~"):
            default = "."
        target = target_path(spec.path, working_dir=workdir, default=default)
        source = f"{_STAGING}/{index}"
        guard = ""
        if kind == "repo":
            what = f"repos[{index}]"
            if spec.if_exists == "skip":
                guard = f'[ -n "$(ls -A {target} 2>/dev/null)" ] || '
            else:
                lines.append(
                    f'[ -z "$(ls -A {target} 2>/dev/null)" ] || {{ echo "berth: {target} is not'
                    f' empty ({what}.if_exists: error)" >&2; exit 1; }}'
                )
        lines.append(
            f"{guard}if [ -d {source} ]; then mkdir -p {target} && cp -a {source}/. {target}/;"
            f' else mkdir -p "$(dirname {target})" && cp -a {source} {target}; fi'
        )
    lines.append(f"rm -rf {_STAGING}")
    return lines


def _entries(conf: Any) -> list[tuple[str, Any]]:
    repos = [("repo", r) for r in getattr(conf, "repos", None) or []]
    return repos + [("file", f) for f in getattr(conf, "files", None) or []]
