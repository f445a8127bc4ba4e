"""The scheduler's reads of the published inventory: parsed once per snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from shared.gpu.inventory import GpuInventory
from shared.inventory_store import CHANNEL, load_inventory
from tests.workers.worlds import backend, two_a100_nodes, worker_context
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    main = {"name": "main", "backends": [backend(local_cluster.kubeconfig)]}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, [main]) as context:
        yield context


def test_an_unchanged_snapshot_is_not_parsed_again_and_a_new_one_is_read_at_once(
    ctx: WorkerContext,
) -> None:
    first = load_inventory(ctx.store, ctx.clusters, "main")
    assert load_inventory(ctx.store, ctx.clusters, "main") is first  # the same snapshot
    fewer = GpuInventory(nodes=two_a100_nodes().nodes[:1])
    ctx.store.publish_inventory(ctx.clusters.key_for("main"), fewer.to_json(), CHANNEL)
    now = load_inventory(ctx.store, ctx.clusters, "main")
    assert [n.name for n in now.nodes] == ["a0"]
    assert [n.name for n in first.nodes] == ["a0", "a1"]  # what a pass already holds
