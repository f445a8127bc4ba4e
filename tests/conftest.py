"""Session fixtures: the real local control plane and Redis, started once.

Integration tests get their own Kubernetes namespace and Redis key prefix, so
they never see each other's objects. Everything started here is stopped by
PID at the end of the session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local import cluster
from shared import kube
from tests.polling import wait_until


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ClusterState]:
    """The embedded control plane (etcd, apiserver, scheduler, KCM, KWOK) and Redis."""
    # A short path: the apiserver and etcd dislike very long socket/data paths.
    directory = Path(os.environ.get("BERTH_TEST_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster"))
    state, _ = cluster.up(directory, timeout_s=180)
    try:
        yield state
    finally:
        cluster.down(directory)


@pytest.fixture(scope="session")
def kube_admin(local_cluster: cluster.ClusterState) -> Iterator[kube.Kube]:
    k = kube.connect(kubeconfig=Path(local_cluster.kubeconfig), timeout=10.0)
    yield k
    k.close()


@pytest.fixture
def namespace(kube_admin: kube.Kube) -> Iterator[str]:
    """A fresh namespace per test, with its default ServiceAccount in place."""
    name = f"t-{secrets.token_hex(4)}"
    kube_admin.call(kube_admin.core.create_namespace, {"metadata": {"name": name}})
    # The ServiceAccount admission plugin refuses pods until the controller made this.
    wait_until(lambda: _has_default_sa(kube_admin, name), timeout=30, what=f"default SA in {name}")
    yield name
    kube_admin.call(kube_admin.core.delete_namespace, name)


@pytest.fixture
def redis_prefix() -> str:
    return f"t{secrets.token_hex(4)}"


def _has_default_sa(k: kube.Kube, namespace: str) -> bool:
    from shared.errors import KubeNotFound

    try:
        k.call(k.core.read_namespaced_service_account, "default", namespace)
    except KubeNotFound:
        return False
    return True
