"""Packing the user's code for a run: ``repos`` and ``files``, as one gzipped tar.

Entry *i* of the archive (a top-level directory ``i/``, or for a single file a
file named ``i``) is the *i*-th entry of ``repos`` followed by ``files``; the
pod puts each at the container path the configuration gives
(:func:`shared.configuration.code.target_path`).

What goes in, per kind:

* a local directory that is a git work tree: the files git would commit now,
  tracked or not, minus what ``.gitignore`` excludes (``git ls-files``), which
  is dstack's "commit plus uncommitted changes" as a tree, so nothing in the
  cluster needs git or the network;
* any other directory: every file, minus ``.gitignore``'s patterns at its top;
* in both, minus ``.dstackignore``'s patterns;
* a git URL: cloned here, on the user's machine (``branch``/``hash`` honoured),
  then packed as a work tree: the cluster never reaches the git server;
* a single file (``files``): that file.

The compressed archive must fit ``max_bytes`` (dstack's default is 2 MiB);
the error says how big it was and what to leave out.
"""

from __future__ import annotations

import fnmatch
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.configuration.code import FileSpec, RepoSpec
from shared.errors import ConfigError

_GIT_TIMEOUT_S = 120  # a clone of a large repo over a slow link; ls-files is instant
_IGNORE_FILES = (".dstackignore",)


def pack(
    repos: list[RepoSpec], files: list[FileSpec], *, base: Path, max_bytes: int
) -> bytes | None:
    """The archive for these entries (``None`` when there are none), or ConfigError."""
    if not repos and not files:
        return None
    buffer = io.BytesIO()
    with (
        tempfile.TemporaryDirectory(prefix="berth-code-") as scratch,
        tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar,
    ):

        def add(source: Path, arcname: str) -> None:
            tar.add(source, arcname=arcname, recursive=False)
            _check_size(buffer.tell(), max_bytes)  # stop early on a huge tree, not at the end

        for index, repo in enumerate(repos):
            field = f"repos.{index}"
            root = _repo_root(repo, base=base, scratch=Path(scratch) / str(index), field=field)
            for path in _repo_files(root, field=field):
                add(root / path, f"{index}/{path}")
        for offset, spec in enumerate(files):
            index = len(repos) + offset
            source = _local(spec.local_path, base=base, field=f"files.{offset}")
            if source.is_dir():
                for path in _tree_files(source):
                    add(source / path, f"{index}/{path}")
            else:
                add(source, str(index))  # a file is the entry itself; a directory is i/...
    data = buffer.getvalue()
    _check_size(len(data), max_bytes)
    return data


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ConfigError(
            f"the code to send (repos and files) is {_mib(size)} compressed, over the limit of"
            f" {_mib(max_bytes)} (BERTH_CODE__MAX_BYTES on the server): add large or generated"
            " files to .dstackignore, or put data in a volume",
            field="repos",
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _repo_root(repo: RepoSpec, *, base: Path, scratch: Path, field: str) -> Path:
    if repo.local_path is not None:
        root = _local(repo.local_path, base=base, field=f"{field}.local_path")
        if not root.is_dir():
            raise ConfigError(f"{root} is not a directory", field=f"{field}.local_path")
        return root
    assert repo.url is not None
    clone = ["git", "clone", "--quiet"]
    if repo.branch and not repo.hash:
        clone += ["--depth", "1", "--branch", repo.branch]
    _git([*clone, "--", repo.url, str(scratch)], field=f"{field}.url")
    if repo.hash:
        _git(["git", "-C", str(scratch), "checkout", "--quiet", repo.hash], field=f"{field}.hash")
    return scratch


def _repo_files(root: Path, *, field: str) -> list[str]:
    if _is_work_tree(root):
        listed = _git(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            field=field,
        )
        paths = [p for p in listed.split("\0") if p and (root / p).is_file()]
    else:
        paths = list(_tree_files(root, patterns=_patterns(root, ".gitignore")))
    ignored = [p for name in _IGNORE_FILES for p in _patterns(root, name)]
    return sorted(p for p in paths if not _matches(p, ignored))


def _tree_files(root: Path, *, patterns: Iterable[str] = ()) -> Iterator[str]:
    rules = [*patterns, ".git"]
    for directory, dirs, names in os.walk(root):
        rel = Path(directory).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not _matches(str(rel / d), rules))
        for name in sorted(names):
            path = str(rel / name) if str(rel) != "." else name
            if not _matches(path, rules):
                yield path


def _patterns(root: Path, name: str) -> list[str]:
    try:
        lines = (root / name).read_text().splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether a gitignore-style pattern excludes ``path`` or one of its directories."""
    parts = path.split("/")
    for pattern in patterns:
        anchored = pattern.startswith("/")
        pat = pattern.strip("/")
        if "/" in pat or anchored:
            # Anchored at the top: the path itself or a directory above it.
            if any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
                return True
        elif any(fnmatch.fnmatch(part, pat) for part in parts):
            return True
    return False


def _local(path: str, *, base: Path, field: str) -> Path:
    resolved = (base / Path(path).expanduser()).resolve()
    if not resolved.exists():
        raise ConfigError(f"{path}: no such file or directory (looked in {base})", field=field)
    return resolved


def _is_work_tree(root: Path) -> bool:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False  # no git here: the directory is packed as plain files
    return result.returncode == 0 and result.stdout.strip() == "true"


def _git(argv: list[str], *, field: str) -> str:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # fail, never ask for a password
        )  # fmt: skip
    except FileNotFoundError as e:
        raise ConfigError(
            "git is not installed here: it is needed for this repo", field=field
        ) from e
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"{argv[1]} timed out after {_GIT_TIMEOUT_S}s", field=field) from e
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        raise ConfigError(f"git {argv[1]} failed: {detail}", field=field)
    return result.stdout


def describe(data: bytes) -> dict[str, Any]:
    """What an archive holds, for tests and messages: entry -> file count."""
    counts: dict[str, int] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            counts[member.name.split("/", 1)[0]] = counts.get(member.name.split("/", 1)[0], 0) + 1
    return counts
