"""Berth's SSH key as a file (``ssh.key_file``): created 0600, refused when exposed."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared import ssh
from shared.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_key_file_is_created_0600_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "berth_ed25519"
    first = ssh.load_key_file(path)
    assert _mode(path) == 0o600
    assert ssh.public_key_text(first).startswith("ssh-ed25519 ")
    assert ssh.load_key_file(path) == first  # the same key on every start


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o666])
def test_a_key_others_may_read_or_change_is_refused_naming_the_fix(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "key"
    ssh.load_key_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=rf"mode {mode:04o}.*chmod 600 {path}") as e:
        ssh.load_key_file(path)
    assert e.value.field == "ssh.key_file"


def test_a_kubernetes_secret_volume_with_fs_group_0440_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    text = ssh.load_key_file(path)
    path.chmod(0o440)
    assert ssh.load_key_file(path) == text


def test_a_file_that_is_not_a_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("changethis\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="does not hold an OpenSSH private key"):
        ssh.load_key_file(path)


def test_a_key_file_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create Berth's SSH key"):
        ssh.load_key_file(tmp_path / "nowhere" / "key")


def test_processes_starting_together_all_read_one_whole_key(tmp_path: Path) -> None:
    path = tmp_path / "shared_key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: ssh.load_key_file(path), range(32)))
    assert len(set(keys)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared_key"]  # no temp file left
