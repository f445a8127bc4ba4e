"""Fleet ``idle_duration`` keeps a fleet's autoscaled nodes from scale-down until idle that long.

The rule is pure (:func:`workers.fleet_warmth.decide`); the pass runs against the
session cluster's real Node objects, annotating the ``a100`` pool's two KWOK
nodes as the autoscalers read them, and gives back only what it added.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from shared import kube
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import parse_configuration
from shared.gpu.inventory import build_inventory
from shared.state.inventory_store import CHANNEL, is_foreign_pod
from shared.state.records import Fleet
from tests.workers.worlds import backend, worker_context
from workers.context import WorkerContext
from workers.fleet_warmth import ADDED, KEPT, OWNER, FleetNodes, decide, keep_fleets_warm

CA = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
KARPENTER = "karpenter.sh/do-not-disrupt"
NODES = ("kwok-a100-0", "kwok-a100-1")
HOUR = 3600


SEEN = frozenset({"main/f"})


def _fleet(
    idle_s: int | None,
    *,
    min_nodes: int = 0,
    nodes: tuple[str, ...] = ("a", "b"),
    initial: int | None = None,
) -> FleetNodes:
    return FleetNodes(
        owner="main/f", nodes=nodes, idle_s=idle_s, min_nodes=min_nodes, initial=initial
    )


def test_an_idle_node_is_kept_until_idle_for_idle_duration_then_let_go() -> None:
    keep, clocks = decide([_fleet(HOUR)], set(), {}, now=100.0)
    assert keep == {"a": "main/f", "b": "main/f"} and clocks == {"a": 100.0, "b": 100.0}
    keep, clocks = decide([_fleet(HOUR)], set(), clocks, now=100.0 + HOUR - 1)
    assert set(keep) == {"a", "b"}
    keep, _ = decide([_fleet(HOUR)], set(), clocks, now=100.0 + HOUR)
    assert keep == {}


def test_a_busy_node_is_kept_and_idle_from_the_last_time_it_was_seen_busy() -> None:
    keep, clocks = decide([_fleet(HOUR)], {"a"}, {"a": 0.0, "b": 0.0}, now=2 * HOUR)
    assert keep == {"a": "main/f"} and clocks == {"a": 2 * HOUR, "b": 0.0}
    keep, clocks = decide([_fleet(HOUR)], set(), clocks, now=2 * HOUR + 10, seen=SEEN)
    assert keep == {"a": "main/f"} and clocks["a"] == 2 * HOUR
    keep, _ = decide([_fleet(HOUR)], set(), clocks, now=3 * HOUR, seen=SEEN)
    assert keep == {}


def test_target_bounds_the_idle_nodes_kept_from_the_fleets_first_sight() -> None:
    fleet = _fleet(HOUR, nodes=("a", "b", "c"), initial=2)
    keep, clocks = decide([fleet], {"c"}, {}, now=0.0)  # busy c counts toward the target
    assert keep == {"a": "main/f", "c": "main/f"} and clocks == {"a": 0.0, "c": 0.0}
    keep, clocks = decide([fleet], set(), clocks, now=60.0, seen=SEEN)
    assert keep == {"a": "main/f", "c": "main/f"} and "b" not in clocks
    keep, clocks = decide([fleet], {"b"}, clocks, now=120.0, seen=SEEN)  # b ran a job
    keep, _ = decide([fleet], set(), clocks, now=HOUR + 60, seen=SEEN)
    assert keep == {"b": "main/f"}  # idle an hour since 120 s: only b's hour is not up


def test_a_node_that_joins_after_the_first_sight_idle_is_not_the_fleets_to_keep() -> None:
    keep, clocks = decide([_fleet(HOUR)], set(), {}, now=0.0)
    keep, _ = decide([_fleet(HOUR, nodes=("a", "b", "new"))], set(), clocks, now=60, seen=SEEN)
    assert set(keep) == {"a", "b"}


def test_nodes_min_are_kept_however_long_they_idle_busy_ones_counting() -> None:
    keep, _ = decide([_fleet(60, min_nodes=1)], set(), {"a": 0.0, "b": 0.0}, now=HOUR)
    assert keep == {"a": "main/f"}
    keep, _ = decide([_fleet(60, min_nodes=1)], {"b"}, {"a": 0.0}, now=HOUR)
    assert keep == {"b": "main/f"}


def test_off_keeps_every_node_of_the_fleet() -> None:
    keep, _ = decide([_fleet(None)], set(), {"a": 0.0, "b": 0.0}, now=10 * HOUR)
    assert set(keep) == {"a", "b"}


def test_idle_duration_parses_as_dstack_writes_it() -> None:
    def idle(text: str) -> object:
        conf = parse_configuration(f"type: fleet\nnodes: 0..2\n{text}\n")
        assert isinstance(conf, FleetConfiguration)
        return conf.idle_duration

    assert idle("idle_duration: 1h") == HOUR
    assert idle("idle_duration: off") == "off"
    assert idle("idle_duration: -1") == "off"
    assert idle("") is None


@pytest.fixture
def pooled(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> Iterator[WorkerContext]:
    """Project ``main`` with the local ``a100`` pool declared as an autoscaling pool, and
    the cluster's real inventory published; the two nodes are cleaned up after."""
    pool = {
        "name": "a100",
        "gpu": "A100",
        "gpus_per_node": 8,
        "max_nodes": 2,
        "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
    }
    main = {"name": "main", "backends": [backend(local_cluster.kubeconfig, node_pools=[pool])]}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, [main]) as ctx:
        k = ctx.clusters.for_project("main").kube
        nodes = k.call(k.core.list_node).items
        pods = [p for p in k.call(k.core.list_pod_for_all_namespaces).items if is_foreign_pod(p)]
        inventory = build_inventory(nodes, pods)
        ctx.store.publish_inventory(ctx.clusters.key_for("main"), inventory.to_json(), CHANNEL)
        try:
            yield ctx
        finally:
            gone = {
                "labels": {KEPT: None},
                "annotations": {CA: None, KARPENTER: None, OWNER: None, ADDED: None},
            }
            for name in NODES:
                k.call(k.core.patch_node, name, {"metadata": gone})


def _marks(k: kube.Kube, node: str) -> tuple[str | None, dict[str, str]]:
    meta = k.call(k.core.read_node, node).metadata
    return (meta.labels or {}).get(KEPT), meta.annotations or {}


@pytest.mark.integration
def test_a_fleets_pool_nodes_are_annotated_then_given_back_keeping_the_operators_own(
    pooled: WorkerContext,
) -> None:
    ctx = pooled
    k = ctx.clusters.for_project("main").kube
    # An operator already keeps the second node from cluster-autoscaler: that stays theirs.
    k.call(k.core.patch_node, NODES[1], {"metadata": {"annotations": {CA: "true"}}})
    conf = parse_configuration(
        "type: fleet\nnodes: 1..2\nidle_duration: 1h\nresources: {gpu: A100:8}\n"
    )
    ctx.store.put_fleet(
        Fleet(
            name="warm",
            project="main",
            configuration=conf.model_dump(mode="json") | {"name": "warm"},
        )
    )

    keep_fleets_warm(ctx, now=1000.0)
    for node in NODES:
        kept, annotations = _marks(k, node)
        assert kept == "true" and annotations[OWNER] == "main/warm", annotations
        assert annotations[CA] == "true" and annotations[KARPENTER] == "true"
    assert _marks(k, NODES[1])[1][ADDED] == KARPENTER  # the operator's CA key is not Berth's

    keep_fleets_warm(ctx, now=1000.0 + HOUR - 1)  # twice within the hour: nothing changes
    assert _marks(k, NODES[0])[0] == "true" and _marks(k, NODES[1])[0] == "true"

    keep_fleets_warm(ctx, now=1000.0 + HOUR)  # idle an hour: nodes.min (1) stays
    assert _marks(k, NODES[0])[0] == "true"
    kept, annotations = _marks(k, NODES[1])
    assert kept is None and OWNER not in annotations and KARPENTER not in annotations
    assert annotations[CA] == "true"  # the operator's, left alone

    ctx.store.delete_fleet("main", "warm")
    keep_fleets_warm(ctx, now=1000.0 + HOUR + 30)  # no fleet wants it: given back too
    kept, annotations = _marks(k, NODES[0])
    assert kept is None and not {CA, KARPENTER, OWNER, ADDED} & set(annotations)
