"""One Berth with real SSH for the whole session: processes, loopback pods, a jump port."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from tests.ssh.loopback import SSHD
from tests.ssh.world import SshWorld, start_world, stop_world


@pytest.fixture(scope="session")
def ssh_world(
    local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshWorld]:
    if not os.access(SSHD, os.X_OK):
        pytest.fail(f"{SSHD} is missing: scripts/install.sh installs openssh-server")
    if os.geteuid() == 0:
        # Debian's sshd wants its privilege separation directory (its service makes it).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    world = start_world(
        local_cluster,
        kube_admin,
        tmp_path_factory.mktemp("ssh"),
        namespace=f"berth-ssh-{secrets.token_hex(3)}",
    )
    try:
        yield world
    finally:
        stop_world(world)
