"""The real nodes' disk: refused at once when the images cannot fit, freed when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.local.realnode import node
from shared.errors import LocalClusterError


def test_nodes_the_disk_cannot_hold_are_refused_naming_the_figures(tmp_path: Path) -> None:
    with pytest.raises(LocalClusterError, match=r"need \d+\.\d GiB free under .* GiB is"):
        node._check_disk(tmp_path, 10**6)  # a million nodes' images fit on no disk
    node._check_disk(tmp_path, 0)


def test_removing_images_deletes_each_nodes_store_and_nothing_else(tmp_path: Path) -> None:
    for i in (0, 1):
        store = tmp_path / "realnode" / f"node-{i}" / "containerd-root" / "io.containerd"
        store.mkdir(parents=True)
        (store / "layer").write_bytes(b"x" * 1024)
        (tmp_path / "realnode" / f"node-{i}" / "kubelet.yaml").write_text("kind: x\n")
    removed = node.remove_images(tmp_path)
    assert [p.parent.name for p in removed] == ["node-0", "node-1"]
    assert not list(tmp_path.glob("realnode/*/containerd-root"))
    assert len(list(tmp_path.glob("realnode/*/kubelet.yaml"))) == 2
    assert node.remove_images(tmp_path) == []  # again: nothing left, no error
