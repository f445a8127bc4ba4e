"""dstack's ``instances``: a run pinned to named nodes, by name, address or fleet number. Pure."""

from __future__ import annotations

import pytest
from kubernetes.client import V1NodeAddress

from shared.configuration.fields import InstanceRef
from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.gpu.inventory import build_inventory
from shared.placement.fleets import resolve_instances
from tests.shared.test_inventory import H100_ALLOCATABLE, H100_LABELS, make_node


def _inventory() -> object:
    nodes = []
    for i, ip in enumerate(("10.1.0.5", "10.1.0.6", "10.1.0.7")):
        node = make_node(
            f"gpu-{i}",
            labels={**H100_LABELS, "kubernetes.io/hostname": f"host-{i}"},
            allocatable=H100_ALLOCATABLE,
        )
        node.status.addresses = [V1NodeAddress(type="InternalIP", address=ip)]
        nodes.append(node)
    return build_inventory(nodes, [])


FLEETS = {"pool": ["gpu-1", "gpu-2"]}  # a fleet's instances are its nodes in name order


@pytest.mark.parametrize(
    ("ref", "node"),
    [
        ({"name": "gpu-0"}, "gpu-0"),  # a node's own name
        ("pool-1", "gpu-2"),  # <fleet>-<n>, the short form
        ({"hostname": "10.1.0.6"}, "gpu-1"),  # an address
        ({"hostname": "host-0"}, "gpu-0"),  # the hostname label
        ({"fleet": "pool", "instance": 0}, "gpu-1"),
    ],
)
def test_each_way_of_naming_an_instance_finds_its_node(ref: object, node: str) -> None:
    assert resolve_instances([InstanceRef.model_validate(ref)], _inventory(), FLEETS) == {node}  # type: ignore[arg-type]


def test_an_instance_that_names_no_node_fails_naming_it() -> None:
    refs = [InstanceRef(name="gpu-0"), InstanceRef(fleet="pool", instance=2)]
    with pytest.raises(ConfigError) as caught:
        resolve_instances(refs, _inventory(), FLEETS)  # type: ignore[arg-type]
    assert caught.value.field == "instances.1"
    assert "no node is instance 2 of fleet pool" in caught.value.message


def test_dstacks_documented_forms_parse() -> None:
    conf = parse_configuration(
        "type: dev-environment\nide: vscode\ninstances:\n  - name: my-fleet-3\n"
        "  - hostname: 203.0.113.10\n  - fleet: my-fleet\n    instance: 3\n  - my-fleet-0\n"
    )
    assert [str(r) for r in conf.instances] == [  # type: ignore[union-attr]
        "instance my-fleet-3",
        "hostname 203.0.113.10",
        "instance 3 of fleet my-fleet",
        "instance my-fleet-0",
    ]


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ("{fleet: pool}", "instances.0", "name an instance one way"),
        ("{name: a, hostname: b}", "instances.0", "name an instance one way"),
        ("{fleet: team/pool, instance: 0}", "instances.0.fleet", "another project's fleet"),
    ],
)
def test_an_instance_named_two_ways_or_half_named_is_refused(
    item: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(f"type: task\ncommands: [x]\ninstances: [{item}]\n")
    assert caught.value.field == field and words in caught.value.message
