"""``repos`` and ``files``: how the user's code reaches the run, in dstack's forms.

Forms accepted (dstack's documentation and examples):

* ``repos: [.]``, ``[..]``, ``["..:/my-repo"]`` (local directory, optionally
  ``:container path``), ``[https://github.com/org/repo]`` or a mapping
  ``{local_path | url, path, branch, hash, if_exists}``;
* ``files: [train.py]``, ``["../configs:~/configs"]``, ``[".:examples"]`` or a
  mapping ``{local_path, path}``.

Local paths are relative to the configuration file's directory; a container
path is absolute, ``~``-based, or relative to the working directory, and a
repo without one lands *in* the working directory (``/workflow`` unless
``working_dir`` says otherwise), as dstack documents. The CLI packs the bytes
(:mod:`cli.code_bundle`); nothing in the cluster fetches code from the network.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from shared.configuration.base import BerthModel

__all__ = ["DEFAULT_WORKING_DIR", "FileField", "FileSpec", "RepoField", "RepoSpec", "target_path"]

# dstack's working directory when a configuration sets none and brings code.
DEFAULT_WORKING_DIR = "/workflow"
# A URL (scheme:// or git@host:path) rather than a local path; "C:" is not a concern here.
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


class RepoSpec(BerthModel):
    local_path: str | None = Field(None, min_length=1)
    url: str | None = Field(None, min_length=1)
    path: str | None = Field(None, min_length=1)
    """Where the repo lands in the container; the working directory when absent."""
    branch: str | None = Field(None, min_length=1)
    hash: str | None = Field(None, min_length=4)
    """A commit to check out (a URL repo)."""
    if_exists: Literal["error", "skip"] = "error"
    """What to do when ``path`` already has files: refuse the run, or keep them."""

    @model_validator(mode="after")
    def _one_source(self) -> RepoSpec:
        if (self.local_path is None) == (self.url is None):
            raise ValueError("expected exactly one of local_path or url")
        if self.local_path is not None and (self.branch or self.hash):
            raise ValueError("branch and hash apply to a url repo, not to local_path")
        return self


class FileSpec(BerthModel):
    local_path: str = Field(min_length=1)
    path: str | None = Field(None, min_length=1)
    """Where it lands; absent: the same relative path under the working directory."""


def repo_from_yaml(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if _URL.match(value):
        return {"url": value}
    local, sep, path = _split_mapping(value)
    return {"local_path": local, **({"path": path} if sep else {})}


def file_from_yaml(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    local, sep, path = _split_mapping(value)
    return {"local_path": local, **({"path": path} if sep else {})}


RepoField = Annotated[RepoSpec, BeforeValidator(repo_from_yaml)]
FileField = Annotated[FileSpec, BeforeValidator(file_from_yaml)]


def target_path(path: str | None, *, working_dir: str, default: str) -> str:
    """The container path an entry lands at, as a shell word for the pod's script.

    ``~`` stays for the shell to expand (the container user's home); a relative
    path is under the working directory.
    """
    chosen = path if path is not None else default
    if chosen == "~" or chosen.startswith("~/"):
        return '"$HOME"' + _quote_rest(chosen[1:])
    if not chosen.startswith("/"):
        chosen = f"{working_dir.rstrip('/')}/{chosen}" if chosen not in ("", ".") else working_dir
    return _quote_rest(chosen)


def _split_mapping(value: str) -> tuple[str, bool, str]:
    local, sep, path = value.partition(":")
    return local, bool(sep), path


def _quote_rest(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'" if text else ""
