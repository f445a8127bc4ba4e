"""The scheduler's reads of the published inventory: parsed once per snapshot."""

from __future__ import annotations

import pytest

from shared.gpu.inventory import GpuInventory
from shared.inventory_store import CHANNEL, load_inventory
from tests.workers.worlds import two_a100_nodes
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


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
