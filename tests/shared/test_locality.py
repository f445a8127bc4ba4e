"""Where a node is (instance type, zone, region) and runs that ask for some: pure."""

from __future__ import annotations

import pytest

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.gpu.inventory import build_inventory
from shared.placement.locality import INSTANCE_TYPE, REGION, ZONE, Locality, Where, node_locality
from shared.placement.offers import match
from shared.placement.requests import request_for
from tests.shared.test_inventory import H100_ALLOCATABLE, H100_LABELS, make_node
from workers.scheduler_placement import where_affinity


def test_the_ga_labels_win_over_the_older_beta_spellings() -> None:
    labels = {
        INSTANCE_TYPE: "a3-highgpu-8g",
        "beta.kubernetes.io/instance-type": "old",
        "failure-domain.beta.kubernetes.io/zone": "us-central1-a",
        REGION: "us-central1",
    }
    assert node_locality(labels) == Locality("a3-highgpu-8g", "us-central1-a", "us-central1")
    assert node_locality({}) == Locality()


def test_a_node_is_allowed_only_when_every_named_dimension_names_its_value() -> None:
    where = Where(zones=frozenset({"a", "b"}), regions=frozenset({"r"}))
    assert where.allows(Locality(zone="a", region="r"))
    assert not where.allows(Locality(zone="c", region="r"))
    assert not where.allows(Locality(zone="a", region=None))  # unlabelled: nothing says where
    assert Where().allows(Locality())
    assert where.describe() == "zone a or b, region r"


def _conf(extra: str) -> object:
    return parse_configuration(f"type: task\ncommands: [x]\nresources: {{gpu: 1}}\n{extra}\n")


def test_a_single_name_is_a_list_of_one_and_the_request_carries_all_three() -> None:
    conf = _conf("instance_types: p4d.24xlarge\navailability_zones: [a, b]\nregions: [r]")
    where = request_for(conf).where
    assert where == Where(frozenset({"p4d.24xlarge"}), frozenset({"a", "b"}), frozenset({"r"}))
    assert request_for(_conf("")).where is None


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("regions: []", "regions", "an empty list allows nothing"),
        ("availability_zones: ['us east']", "availability_zones", "cannot be a node label"),
        ("instance_types: [-x]", "instance_types", "cannot be a node label"),
    ],
)
def test_a_value_no_node_label_could_hold_is_refused_naming_the_field(
    extra: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _conf(extra)
    assert caught.value.field is not None and caught.value.field.startswith(field)
    assert words in caught.value.message


def test_fleets_take_them_too() -> None:
    conf = parse_configuration("type: fleet\nnodes: 2\ninstance_types: [a3-megagpu-8g]\n")
    assert request_for(conf).where == Where(instance_types=frozenset({"a3-megagpu-8g"}))


def test_placement_takes_only_nodes_in_the_named_zone_and_says_where_when_none_is() -> None:
    nodes = [
        make_node("in-a", labels={**H100_LABELS, ZONE: "a"}, allocatable=H100_ALLOCATABLE),
        make_node("in-b", labels={**H100_LABELS, ZONE: "b"}, allocatable=H100_ALLOCATABLE),
        make_node("nowhere", labels=H100_LABELS, allocatable=H100_ALLOCATABLE),
    ]
    inventory = build_inventory(nodes, [])
    verdict = match(inventory, request_for(_conf("availability_zones: [b]")))
    assert [o.node for o in verdict.offers] == ["in-b"]
    never = match(inventory, request_for(_conf("availability_zones: [c]")))
    assert not never.possible and never.reason.endswith("in zone c"), never.reason
    assert [o.node for o in match(inventory, request_for(_conf(""))).offers] == [
        "in-a",
        "in-b",
        "nowhere",
    ]


def test_in_namespace_mode_every_gpu_term_also_requires_the_labels() -> None:
    gpu_terms = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gfd", "operator": "In", "values": ["H100"]}]},
                {"matchExpressions": [{"key": "gke", "operator": "In", "values": ["h100"]}]},
            ]
        }
    }
    where = Where(zones=frozenset({"z"}))
    zone = {"key": ZONE, "operator": "In", "values": ["z"]}
    terms = where_affinity(gpu_terms, where)["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [t["matchExpressions"][-1] for t in terms["nodeSelectorTerms"]] == [zone, zone]
    alone = where_affinity(None, where)["requiredDuringSchedulingIgnoredDuringExecution"]
    assert alone["nodeSelectorTerms"] == [{"matchExpressions": [zone]}]


@pytest.mark.parametrize(
    ("provider_id", "labels", "backend"),
    [
        ("gce://proj/us-central1-a/gke-node-1", {}, "gcp"),
        ("aws:///us-east-1a/i-0123456789abcdef0", {}, "aws"),
        ("azure:///subscriptions/s/resourceGroups/g/providers/x/vm-1", {}, "azure"),
        ("ocid1.instance.oc1.iad.abc", {}, "oci"),
        ("nebius://computeinstance-e00abc", {}, "nebius"),  # no other name: the scheme
        (None, {"eks.amazonaws.com/nodegroup": "gpu"}, "aws"),  # no providerID: the label
        (None, {"type": "kwok"}, None),  # nothing says a cloud runs it
    ],
)
def test_a_nodes_cloud_is_its_provider_id_scheme_then_a_managed_node_group_label(
    provider_id: str | None, labels: dict[str, str], backend: str | None
) -> None:
    assert node_locality(labels, provider_id).backend == backend


def _on(name: str, provider_id: str | None) -> object:
    node = make_node(name, labels=H100_LABELS, allocatable=H100_ALLOCATABLE)
    node.spec.provider_id = provider_id
    return node


def test_backends_place_only_on_the_named_clouds_and_kubernetes_means_any_node() -> None:
    inventory = build_inventory(
        [_on("g", "gce://p/z/g"), _on("a", "aws:///z/i-1"), _on("metal", None)], []
    )
    assert inventory.node("g") is not None and inventory.node("g").backend == "gcp"  # type: ignore[union-attr]

    def placed(extra: str) -> list[str]:
        return [o.node for o in match(inventory, request_for(_conf(extra))).offers]

    assert placed("backends: [gcp]") == ["g"]
    assert placed("backends: [aws, gcp]") == ["a", "g"]
    assert placed("backends: [kubernetes, gcp]") == ["a", "g", "metal"]
    never = match(inventory, request_for(_conf("backends: [azure]")))
    assert not never.possible and never.reason.endswith("in backend azure"), never.reason


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("backends: []", "an empty list allows no backend"),
        ("backends: [gcpp]", "'gcpp' is not a dstack backend"),
    ],
)
def test_a_backend_dstack_does_not_know_is_refused_naming_the_field(extra: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _conf(extra)
    assert caught.value.field is not None and caught.value.field.startswith("backends")
    assert words in caught.value.message


def test_in_namespace_mode_each_named_cloud_is_one_more_term_on_its_node_group_label() -> None:
    gpu_terms = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gfd", "operator": "In", "values": ["H100"]}]},
                {"matchExpressions": [{"key": "gke", "operator": "In", "values": ["h100"]}]},
            ]
        }
    }
    where = Where(backends=frozenset({"gcp", "aws"}))
    required = where_affinity(gpu_terms, where)["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [[e["key"] for e in t["matchExpressions"]] for t in required["nodeSelectorTerms"]] == [
        ["gfd", "eks.amazonaws.com/nodegroup"],
        ["gfd", "cloud.google.com/gke-nodepool"],
        ["gke", "eks.amazonaws.com/nodegroup"],
        ["gke", "cloud.google.com/gke-nodepool"],
    ]
    with pytest.raises(ValueError, match="crusoe can be told apart only by the nodes' providerID"):
        Where(backends=frozenset({"crusoe"})).backend_terms()


def test_a_fleet_takes_target_within_its_range_and_refuses_it_outside() -> None:
    conf = parse_configuration("type: fleet\nnodes: {min: 2, target: 6, max: 10}\n")
    assert (conf.nodes.min, conf.nodes.target, conf.nodes.max) == (2, 6, 10)  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as caught:
        parse_configuration("type: fleet\nnodes: {min: 2, target: 11, max: 10}\n")
    assert caught.value.field == "nodes.target"
    assert "outside nodes 2..10" in caught.value.message
