"""Where a node is (instance type, zone, region) and runs that ask for some: pure."""

from __future__ import annotations

import pytest

from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.gpu.inventory import build_inventory
from shared.locality import INSTANCE_TYPE, REGION, ZONE, Locality, Where, node_locality
from shared.offers import match
from shared.requests import request_for
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
