"""Packing a run's code: what goes in, what is left out, and the size limit."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli.code_bundle import pack
from shared.configuration.code import FileSpec, RepoSpec
from shared.errors import ConfigError

MIB = 2**20


def _names(data: bytes | None) -> set[str]:
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name for m in tar.getmembers()}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "src" / "model.py").write_text("x = 1\n")
    (root / ".gitignore").write_text("*.ckpt\nwandb/\n")
    (root / "big.ckpt").write_bytes(b"0" * 1000)
    (root / "wandb").mkdir()
    (root / "wandb" / "run.log").write_text("log")
    (root / ".dstackignore").write_text("notes/\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.md").write_text("todo")
    return root


def test_a_git_work_tree_sends_tracked_and_untracked_files_minus_ignored(repo: Path) -> None:
    _git(repo, "init", "-q")
    _git(repo, "add", "train.py", ".gitignore")
    _git(repo, "commit", "-q", "-m", "first")
    (repo / "train.py").write_text("print('changed, not committed')\n")  # the diff goes too
    data = pack([RepoSpec(local_path=".")], [], base=repo, max_bytes=MIB)
    names = _names(data)
    assert {"0/train.py", "0/src/model.py", "0/.gitignore", "0/.dstackignore"} <= names
    assert not {"0/big.ckpt", "0/wandb/run.log", "0/notes/todo.md"} & names
    assert not any(n.startswith("0/.git/") for n in names)
    with tarfile.open(fileobj=io.BytesIO(data or b""), mode="r:gz") as tar:
        member = tar.extractfile("0/train.py")
        assert member is not None and b"changed" in member.read()


def test_a_plain_directory_honours_gitignore_and_dstackignore_at_its_top(repo: Path) -> None:
    names = _names(pack([RepoSpec(local_path=".")], [], base=repo, max_bytes=MIB))
    assert "0/train.py" in names and "0/src/model.py" in names
    assert not {"0/big.ckpt", "0/wandb/run.log", "0/notes/todo.md"} & names


def test_files_are_entries_after_the_repos_a_file_as_itself(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("a: 1")
    files = [FileSpec(local_path="train.py"), FileSpec(local_path="../configs", path="~/c")]
    names = _names(pack([RepoSpec(local_path="src")], files, base=repo, max_bytes=MIB))
    assert names == {"0/model.py", "1", "2/a.yaml"}


def test_a_git_url_is_cloned_here_and_packed_at_its_branch(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    (origin / "a.py").write_text("a")
    _git(origin, "add", "a.py")
    _git(origin, "commit", "-q", "-m", "a")
    _git(origin, "checkout", "-q", "-b", "feature")
    (origin / "b.py").write_text("b")
    _git(origin, "add", "b.py")
    _git(origin, "commit", "-q", "-m", "b")
    url = f"file://{origin}"
    main = _names(pack([RepoSpec(url=url, branch="main")], [], base=tmp_path, max_bytes=MIB))
    feature = _names(pack([RepoSpec(url=url, branch="feature")], [], base=tmp_path, max_bytes=MIB))
    assert main == {"0/a.py"} and feature == {"0/a.py", "0/b.py"}


def test_code_over_the_limit_is_refused_with_its_size_and_the_limit(tmp_path: Path) -> None:
    import os

    (tmp_path / "data.bin").write_bytes(os.urandom(3 * MIB))  # does not compress
    with pytest.raises(ConfigError) as caught:
        pack([RepoSpec(local_path=".")], [], base=tmp_path, max_bytes=2 * MIB)
    assert caught.value.field == "repos"
    assert "over the limit of 2.0 MiB" in caught.value.message
    assert ".dstackignore" in caught.value.message


def test_a_missing_local_path_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        pack([], [FileSpec(local_path="nope.py")], base=tmp_path, max_bytes=MIB)
    assert caught.value.field == "files.0"
    assert "nope.py" in caught.value.message


def test_no_repos_or_files_sends_nothing(tmp_path: Path) -> None:
    assert pack([], [], base=tmp_path, max_bytes=MIB) is None
