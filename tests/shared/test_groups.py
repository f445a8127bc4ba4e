"""Node groups of tasks, replica groups of services, and per-node volume names (dstack's)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.configuration.groups import (
    group_configuration,
    node_group_of,
    router_group,
    stored_router,
)
from shared.configuration.parse import configuration_from_stored, parse_configuration
from shared.errors import ConfigError, NotSupportedError
from shared.placement.requests import group_requests, request_for
from shared.state.jobs import jobs_for
from shared.state.records import Run
from shared.volumes.volume_placement import mounted_volumes, volume_names

RAY = """
type: task
name: ray
image: rayproject/ray
groups:
  - name: head
    commands: [ray start --head --port=6379 --block]
    ports: [8265]
    resources: {gpu: H100:8, shm_size: 16GB}
  - nodes: 2
    commands: ['ray start --address=${{ groups[0].nodes[0].IP_ADDRESS }}:6379 --block']
    resources: {gpu: H100:8, shm_size: 16GB}
"""

PD = """
type: service
name: pd
port: 8000
replicas:
  - count: 1
    commands: [serve --router]
    image: sglang
  - name: prefill
    count: 1..4
    scaling: {metric: rps, target: 3}
    commands: [serve --prefill]
    image: other
  - count: 0..2
    scaling: {metric: rps, target: 2}
    commands: [serve --decode]
"""


def _conf(text: str) -> Any:
    return parse_configuration(text)


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    return caught.value


def _run(conf: Any) -> Run:
    return Run(
        id="r1",
        project="main",
        name=conf.name,
        user="u",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
    )


# -- task groups ---------------------------------------------------------------------


def test_node_groups_make_one_task_of_their_total_nodes_with_their_resources() -> None:
    conf = _conf(RAY)
    assert [g.name for g in conf.groups] == ["head", "1"]  # unnamed: its position
    assert conf.nodes == 3
    assert str(conf.resources.gpu) == str(conf.groups[0].resources.gpu)
    request = request_for(conf)
    assert (request.nodes, request.gpu_count) == (3, 8)  # one gang of three 8-GPU nodes


def test_each_rank_belongs_to_a_group_in_order_rank_0_first() -> None:
    conf = _conf(RAY)
    assert [node_group_of(conf, rank) for rank in range(3)] == ["head", "1", "1"]
    jobs = jobs_for(_run(conf), conf)
    assert [(j.job_num, j.group, j.jobs_in_run) for j in jobs] == [
        (0, "head", 3),
        (1, "1", 3),
        (2, "1", 3),
    ]


def test_a_group_configuration_runs_the_groups_commands_and_ports() -> None:
    conf = _conf(RAY)
    head = group_configuration(conf, "head")
    assert head.commands == ["ray start --head --port=6379 --block"]
    assert [p.container_port for p in head.ports] == [8265]
    assert group_configuration(conf, "1").ports == []
    assert group_configuration(conf, None) is conf


def test_a_stored_task_with_groups_reads_back_the_same() -> None:
    conf = _conf(RAY)
    again = configuration_from_stored(conf.model_dump(mode="json"))
    assert again == conf
    # An API client sending the dumped form gets the same configuration too.
    assert parse_configuration(conf.model_dump_json()) == conf


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("nodes: 2\n", "nodes", "mutually exclusive"),
        ("commands: [x]\n", "commands", "in each group"),
        ("ports: [80]\n", "ports", "in each group"),
        ("resources: {gpu: A10}\n", "resources", "set resources in the groups"),
        ("groups: []\n", "groups", "at least one"),
    ],
)
def test_top_level_fields_that_groups_replace_are_refused_naming_them(
    change: str, field: str, words: str
) -> None:
    text = RAY + change if change != "groups: []\n" else "type: task\nimage: x\ngroups: []\n"
    error = _error(text)
    assert error.field == field
    assert words in error.message


def test_groups_asking_for_different_resources_each_keep_their_own_per_node_request() -> None:
    conf = _conf(RAY.replace("gpu: H100:8, shm_size: 16GB}\n  - nodes", "cpu: 4}\n  - nodes"))
    requests = group_requests(conf)
    assert (requests["head"].cpu_millicores, requests["head"].gpu_count) == (4000, 0)
    assert (requests["1"].gpu_count, requests["1"].nodes) == (8, 2)  # its own nodes
    assert request_for(conf).nodes == 3  # the run is still one gang of three nodes
    assert group_configuration(conf, "head").resources.cpu.count.min == 4
    assert group_requests(_conf(RAY)) == {}  # all alike: the run's request speaks for all
    stored = configuration_from_stored(conf.model_dump(mode="json"))  # as workers read it
    assert group_requests(stored) == requests


def test_a_top_level_resources_beside_groups_that_differ_from_it_is_refused() -> None:
    text = RAY.replace("image: rayproject/ray\n", "image: rayproject/ray\nresources: {cpu: 2}\n")
    assert _error(text).field == "resources"


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("echo ${{ groups[2].nodes[0].IP_ADDRESS }}", "names no node"),
        ("echo ${{ groups[1].nodes[2].IP_ADDRESS }}", "names no node"),
        ("echo ${{ groups[0].nodes[0].HOSTNAME }}", "expected groups[i].nodes[j].IP_ADDRESS"),
    ],
)
def test_a_node_reference_past_the_groups_is_refused_naming_the_group(
    command: str, words: str
) -> None:
    text = RAY.replace("ray start --head --port=6379 --block", f"'{command}'")
    error = _error(text)
    assert error.field == "groups.0.commands"
    assert words in error.message


def test_duplicate_group_names_and_groups_without_anything_to_run_are_refused() -> None:
    twice = _error(RAY.replace("  - nodes: 2\n", "  - name: head\n    nodes: 2\n"))
    assert (twice.field, "given twice" in twice.message) == ("groups", True)
    bare = _error(RAY.replace("image: rayproject/ray\n", "").replace("commands: [ray start", "#"))
    assert bare.field == "groups.0.commands"


# -- service replica groups ----------------------------------------------------------


def test_replica_groups_start_with_each_groups_minimum() -> None:
    conf = _conf(PD)
    assert [g.name for g in conf.groups] == ["0", "prefill", "2"]
    assert (conf.replicas.min, conf.replicas.max) == (2, 7)
    jobs = jobs_for(_run(conf), conf)
    assert [(j.replica_num, j.group) for j in jobs] == [(0, "0"), (1, "prefill")]


def test_a_replica_group_configuration_has_its_own_commands_image_and_scaling() -> None:
    conf = _conf(PD)
    prefill = group_configuration(conf, "prefill")
    assert (prefill.commands, prefill.image) == (["serve --prefill"], "other")
    assert (prefill.replicas.min, prefill.replicas.max, prefill.scaling.target) == (1, 4, 3)
    router = group_configuration(conf, "0")
    assert (router.commands, router.image, router.scaling) == (["serve --router"], "sglang", None)


def test_groups_is_the_same_as_replicas_as_a_list_and_reads_back_stored() -> None:
    conf = _conf(PD)
    assert _conf(PD.replace("replicas:\n", "groups:\n")) == conf
    assert configuration_from_stored(conf.model_dump(mode="json")) == conf


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (PD + "scaling: {metric: rps, target: 1}\n", "scaling", "in each group"),
        (PD + "commands: [x]\n", "commands", "in each group"),
        (PD.replace("count: 1\n", "count: 1..2\n"), "groups.0.replicas", "needs scaling"),
        (PD.replace("count: 0..2\n", "count: 2\n"), "groups.2.scaling", "range"),
        (PD.replace("count: 0..2\n", "count: 1..\n"), "groups.2.replicas", "upper bound"),
        (PD.replace("name: pd\n", "name: pd\npython: '3.12'\n"), "groups.0.image", "python"),
        (PD.replace("name: pd\n", "name: pd\nimage: x\n"), "groups.0.image", "one place"),
        (PD.replace("name: prefill", "name: Prefill"), "groups.1.name", "pattern"),
    ],
)
def test_bad_replica_groups_are_refused_naming_the_field(text: str, field: str, words: str) -> None:
    error = _error(text)
    assert error.field == field
    assert words in error.message


def test_replica_group_fields_berth_does_not_honour_are_refused_by_name() -> None:
    error = _error(PD.replace("    image: sglang\n", "    reservation: x\n"))
    assert isinstance(error, NotSupportedError)
    assert error.field == "groups.0.reservation"


def test_one_replica_group_may_route_the_services_requests() -> None:
    conf = _conf(
        PD.replace("    image: sglang\n", "    image: sglang\n    router: {type: sglang}\n")
    )
    assert router_group(conf) is not None and router_group(conf).name == "0"  # type: ignore[union-attr]
    assert stored_router(conf.model_dump(mode="json")) == ("0", "sglang")
    dynamo = _conf(
        PD.replace("    image: sglang\n", "    image: sglang\n    router: {type: dynamo}\n")
    )
    assert stored_router(dynamo.model_dump(mode="json")) == ("0", "dynamo")
    assert stored_router(_conf(PD).model_dump(mode="json")) is None


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            PD.replace(
                "  - count: 1\n", "  - count: 1..2\n    scaling: {metric: rps, target: 1}\n"
            ).replace("    image: sglang\n", "    image: sglang\n    router: {type: sglang}\n"),
            "groups.0.replicas",
            "exactly one replica",
        ),
        (
            "type: service\nport: 80\nreplicas:\n  - count: 1\n    commands: [a]\n"
            "    router: {}\n  - count: 1\n    commands: [b]\n    router: {}\n",
            "groups.1.router",
            "only one replica group may route",
        ),
        (
            "type: service\nport: 80\nreplicas:\n  - count: 1\n    commands: [r]\n"
            "    router: {type: sglang}\n",
            "groups.0.router",
            "another group of replicas to route to",
        ),
        (
            PD.replace("    image: sglang\n", "    image: sglang\n    router: {type: nginx}\n"),
            "groups.0.router.type",
            "sglang",
        ),
    ],
)
def test_a_router_group_is_one_replica_and_routes_to_others(
    text: str, field: str, words: str
) -> None:
    error = _error(text)
    assert error.field == field and words in error.message, (error.field, error.message)


# -- ${{ dstack.node_rank }} in volume names -----------------------------------------


def test_a_node_rank_volume_name_is_one_volume_per_node() -> None:
    conf = _conf(
        "type: task\nnodes: 3\ncommands: [x]\n"
        "volumes: [{name: 'data-${{ dstack.node_rank }}', path: /data}, shared:/shared]"
    )
    mount = conf.volumes[0]
    assert mount.per_node and not conf.volumes[1].per_node
    assert [mount.name_for(r) for r in range(3)] == ["data-0", "data-1", "data-2"]
    assert volume_names(conf) == ["data-0", "data-1", "data-2", "shared"]
    assert mounted_volumes(conf.model_dump(mode="json")) == volume_names(conf)
