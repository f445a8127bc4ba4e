"""The inotify instance limit a local cluster raises for KWOK, and gives back. Pure: files."""

from __future__ import annotations

from pathlib import Path

from cli.local import inotify


def test_the_limit_is_raised_once_and_the_hosts_value_comes_back_with_the_last_cluster(
    tmp_path: Path,
) -> None:
    key, marker = tmp_path / "max_user_instances", tmp_path / "marker"
    key.write_text("128\n")
    inotify.raise_limit(key, marker)
    inotify.raise_limit(key, marker)  # a second cluster: the host's value is kept once
    assert int(key.read_text()) == inotify.INSTANCES and marker.read_text() == "128\n"
    inotify.restore_limit(others_running=True, key=key, marker=marker)
    assert int(key.read_text()) == inotify.INSTANCES  # another cluster still needs it
    inotify.restore_limit(others_running=False, key=key, marker=marker)
    assert key.read_text() == "128\n" and not marker.exists()


def test_a_host_already_above_the_limit_is_left_alone(tmp_path: Path) -> None:
    key, marker = tmp_path / "max_user_instances", tmp_path / "marker"
    key.write_text("8192\n")
    inotify.raise_limit(key, marker)
    inotify.restore_limit(others_running=False, key=key, marker=marker)
    assert key.read_text() == "8192\n" and not marker.exists()


def test_a_running_kwok_is_told_from_its_command_line(tmp_path: Path) -> None:
    assert not inotify.kwok_running(tmp_path)
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cmdline").write_bytes(
        b"/root/.cache/berth/local-cluster-abc/bin/kwok\0--kubeconfig=x\0"
    )
    assert inotify.kwok_running(tmp_path)
