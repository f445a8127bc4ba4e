"""The real nodes' stop removes the pod network namespaces the kubelet left behind, and
only those: another runtime's, and any a process is still in, stay."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid

import pytest

from cli.local.realnode.network import NETNS_DIR, _in_use, cni_netns, remove_netns
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and ip(8): the test makes network namespaces",
)


def test_a_left_namespace_is_removed_and_one_in_use_or_not_ours_is_kept() -> None:
    left, busy, other = (f"cni-berth-test-{uuid.uuid4().hex[:12]}" for _ in range(3))
    holder: subprocess.Popen[bytes] | None = None
    try:
        for name in (left, busy, other):
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
        holder = subprocess.Popen(["ip", "netns", "exec", busy, "sleep", "60"])
        wait_until(lambda: _in_use(NETNS_DIR / busy), timeout=10, what="a process in it")
        kept = set(cni_netns()) - {left, busy}  # the host's own, and "other": not ours
        assert remove_netns(kept=kept) == [left]
        now = cni_netns()
        assert left not in now and busy in now and other in now
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        for name in (left, busy, other):
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(["ip", "netns", "delete", name], timeout=10, capture_output=True)
