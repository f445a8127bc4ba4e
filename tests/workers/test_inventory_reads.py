"""The scheduler's reads of the published inventory: parsed once per snapshot."""

from __future__ import annotations

import pytest

from shared.gpu.inventory import GpuInventory
from shared.state.inventory_store import CHANNEL, load_inventory
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


def test_an_unchanged_snapshot_is_not_fetched_again_only_its_version(ctx: WorkerContext) -> None:
    key = ctx.clusters.key_for("main")
    version, raw = ctx.store.inventory_if_changed(key, None)
    assert raw is not None and version != "0"
    assert ctx.store.inventory_if_changed(key, version) == (version, None)
    ctx.store.publish_inventory(key, two_a100_nodes().to_json(), CHANNEL)  # the same, again
    newer, again = ctx.store.inventory_if_changed(key, version)
    assert newer != version and again == raw


def test_a_snapshot_published_without_a_version_is_always_fetched_and_compared(
    ctx: WorkerContext,
) -> None:
    """An older proxy worker during an upgrade sets only the snapshot: never trust a cache."""
    key = ctx.clusters.key_for("main")
    ctx.store.r.delete(ctx.store.key("inventory-version", key))
    first = load_inventory(ctx.store, ctx.clusters, "main")
    assert ctx.store.inventory_if_changed(key, "0")[1] is not None
    fewer = GpuInventory(nodes=two_a100_nodes().nodes[:1])
    ctx.store.r.set(ctx.store.key("inventory", key), fewer.to_json())  # no version bump
    assert [n.name for n in load_inventory(ctx.store, ctx.clusters, "main").nodes] == ["a0"]
    assert [n.name for n in first.nodes] == ["a0", "a1"]
