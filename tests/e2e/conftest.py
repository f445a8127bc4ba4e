"""The whole Berth stack, started once per session on the local cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from tests.rbac import berth_kubeconfig
from tests.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(
    local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    namespace = "berth-e2e"
    kube_admin.call(kube_admin.core.create_namespace, {"metadata": {"name": namespace}})
    directory = tmp_path_factory.mktemp("stack")
    # Berth runs with only the RBAC it ships (deploy/k8s), never as cluster admin.
    kubeconfig = berth_kubeconfig(
        kube_admin, local_cluster, namespace=namespace, directory=directory
    )
    s = start_stack(
        local_cluster,
        directory,
        namespace=namespace,
        workers=2,
        kubeconfig=kubeconfig,
        # Queue places past 8 are published apart from the records (50 by default), so
        # the tests here read both kinds through the API (test_queue's 20 waiting runs).
        env={"BERTH_SCHEDULING__EXACT_POSITIONS": "8"},
    )
    try:
        yield s
    finally:
        s.stop()
