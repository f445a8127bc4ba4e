"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from tests.workers.worlds import backend, worker_context
from workers.context import WorkerContext


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    """An in-process worker context with one project, ``main``, on the session's cluster."""
    main = {"name": "main", "backends": [backend(local_cluster.kubeconfig)]}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, [main]) as context:
        yield context
