"""match() caches, per snapshot and request, the nodes that could ever fit: never stale."""

from __future__ import annotations

import threading
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.gpu.inventory import GpuInventory, Resources
from shared.placement.offers import Request, clear_fit_cache, fits, match
from tests.shared.test_queue import cluster, request


def _uncached(inventory: GpuInventory, req: Request) -> list[str]:
    """What match() answers, computed the long way over every node."""
    return sorted(
        n.name
        for n in inventory.nodes
        if (req.allowed_nodes is None or n.name in req.allowed_nodes)
        and fits(n, req, n.allocatable)
    )


def test_a_new_snapshot_is_matched_afresh_though_the_request_is_the_same() -> None:
    before = cluster(("a", "A100", 8))
    assert [o.node for o in match(before, request(1)).offers] == ["a"]
    after = cluster(("a", "H100", 8), ("b", "A100", 8))
    assert [o.node for o in match(after, request(1)).offers] == ["b"]
    assert [o.node for o in match(before, request(1)).offers] == ["a"]  # still its own


def test_free_capacity_and_reservations_are_read_at_each_match_not_cached() -> None:
    inventory = cluster(("a", "A100", 8), ("b", "A100", 8))
    assert len(match(inventory, request(4)).offers) == 2
    taken = {"a": Resources(gpus={"nvidia.com/gpu": 8})}
    assert [o.node for o in match(inventory, request(4), reserved=taken).offers] == ["b"]
    fleet = replace(request(4), allowed_nodes=frozenset({"a"}))
    assert [o.node for o in match(inventory, fleet).offers] == ["a"]
    assert not match(inventory, fleet, reserved=taken).offers


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["A100", "H100", "A10"]), min_size=1, max_size=12),
    st.sampled_from(["A100", "H100", "A10"]),
    st.integers(min_value=1, max_value=9),
)
def test_cached_or_not_the_answer_is_the_same(models: list[str], model: str, gpus: int) -> None:
    inventory = cluster(*((f"n{i}", m, 8) for i, m in enumerate(models)))
    req = request(gpus, model)
    cold = match(inventory, req)
    warm = match(inventory, req)
    assert cold == warm
    assert sorted(o.node for o in warm.offers) == _uncached(inventory, req)
    clear_fit_cache()


def test_threads_matching_many_snapshots_at_once_get_their_own_answers() -> None:
    snapshots = [cluster((f"s{i}", "A100", 8)) for i in range(12)]
    wrong: list[str] = []

    def work(i: int) -> None:
        for _ in range(50):
            got = [o.node for o in match(snapshots[i], request(1)).offers]
            if got != [f"s{i}"]:
                wrong.append(f"{i}: {got}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(snapshots))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
