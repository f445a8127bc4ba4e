"""The whole Berth stack, started once per session on the local cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from tests.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(
    local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    namespace = "berth-e2e"
    kube_admin.call(kube_admin.core.create_namespace, {"metadata": {"name": namespace}})
    s = start_stack(local_cluster, tmp_path_factory.mktemp("stack"), namespace=namespace, workers=2)
    try:
        yield s
    finally:
        s.stop()
