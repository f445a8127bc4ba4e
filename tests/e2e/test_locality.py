"""``instance_types``, ``availability_zones``, ``regions`` and ``backends``: where nodes are.

The local cluster's ``kwok-aws-v100-0`` carries ``node.kubernetes.io/instance-type:
p3.2xlarge`` (``cli/local/nodes.py``), as cloud nodes do; it and ``kwok-eks-a10g-0``
have an AWS providerID, ``kwok-gke-t4-0`` a GCE one (``cli/local/node-pools.yaml``).
Zones are labelled by the test on one node for its duration, with a name no other
test uses.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import kube
from tests.e2e.runs import ended
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

ZONE_LABEL = "topology.kubernetes.io/zone"
ZONED_NODE = "kwok-gke-t4-0"


def _apply(stack: Stack, tmp_path: Path, name: str, extra: str) -> Any:
    conf = tmp_path / f"{name}.dstack.yml"
    conf.write_text(
        textwrap.dedent(
            f"""
            type: task
            name: {name}
            commands: [nvidia-smi]
            resources: {{gpu: 1, cpu: 1.., memory: 1GB..}}
            env: {{KWOK_RUN_FOR: 1s}}
            """
        )
        + extra
        + "\n"
    )
    return stack.cli("apply", "-f", str(conf), "-y", "-d")


def _finished(stack: Stack, name: str) -> dict[str, Any]:
    run = ended(stack, name)
    assert run["status"] == "done", run
    return run


@pytest.fixture
def zone(kube_admin: kube.Kube, stack: Stack) -> Iterator[str]:
    """A zone only ``ZONED_NODE`` is in, once Berth's inventory says so."""
    name = f"berth-test-{secrets.token_hex(3)}"
    k = kube_admin
    k.call(k.core.patch_node, ZONED_NODE, {"metadata": {"labels": {ZONE_LABEL: name}}})

    def seen() -> bool:
        nodes = json.loads(stack.cli("nodes", "--json").stdout)["nodes"]
        return any(n["name"] == ZONED_NODE and n["zone"] == name for n in nodes)

    try:
        wait_until(seen, timeout=30, what=f"{ZONED_NODE} in zone {name} in berth nodes")
        yield name
    finally:
        k.call(k.core.patch_node, ZONED_NODE, {"metadata": {"labels": {ZONE_LABEL: None}}})


def test_berth_nodes_says_each_nodes_instance_type(stack: Stack) -> None:
    nodes = json.loads(stack.cli("nodes", "--json").stdout)["nodes"]
    found = {n["name"]: n["instance_type"] for n in nodes}
    assert found["kwok-aws-v100-0"] == "p3.2xlarge"
    assert found["kwok-h100-0"] is None


def test_a_run_naming_an_instance_type_is_placed_on_a_node_of_that_type(
    stack: Stack, tmp_path: Path
) -> None:
    applied = _apply(stack, tmp_path, "where-type", "instance_types: [p3.2xlarge]")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    run = _finished(stack, "where-type")
    assert [j["node"] for j in run["jobs"]] == ["kwok-aws-v100-0"]


def test_a_run_naming_a_zone_is_placed_in_it(stack: Stack, tmp_path: Path, zone: str) -> None:
    applied = _apply(stack, tmp_path, "where-zone", f"availability_zones: {zone}")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    run = _finished(stack, "where-zone")
    assert [j["node"] for j in run["jobs"]] == [ZONED_NODE]


def test_a_region_no_node_is_in_is_planned_as_impossible_and_fails_naming_it(
    stack: Stack, tmp_path: Path
) -> None:
    applied = _apply(stack, tmp_path, "where-nowhere", "regions: [nowhere-1]")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plan = " ".join(applied.stdout.split())
    assert "impossible" in plan and "in region nowhere-1" in plan, plan

    def failed() -> dict[str, Any] | None:
        runs = json.loads(stack.cli("ps", "-a", "--json").stdout)
        run = next(r for r in runs if r["name"] == "where-nowhere")
        return run if run["status"] == "failed" else None

    run = wait_until(failed, timeout=60, what="where-nowhere failed")
    assert "in region nowhere-1" in run["reason"], run


def test_berth_nodes_says_each_nodes_cloud_from_its_provider_id(stack: Stack) -> None:
    nodes = json.loads(stack.cli("nodes", "--json").stdout)["nodes"]
    found = {n["name"]: n["backend"] for n in nodes}
    assert (found["kwok-gke-t4-0"], found["kwok-aws-v100-0"]) == ("gcp", "aws")
    assert found["kwok-h100-0"] is None


def test_a_run_naming_a_cloud_is_placed_on_its_only_node_there(
    stack: Stack, tmp_path: Path
) -> None:
    applied = _apply(stack, tmp_path, "where-gcp", "backends: [gcp]")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    run = _finished(stack, "where-gcp")
    assert [j["node"] for j in run["jobs"]] == ["kwok-gke-t4-0"]


def test_a_cloud_no_node_runs_on_is_planned_as_impossible(stack: Stack, tmp_path: Path) -> None:
    applied = _apply(stack, tmp_path, "where-azure", "backends: [azure]")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plan = " ".join(applied.stdout.split())
    assert "impossible" in plan and "in backend azure" in plan, plan
    run = ended(stack, "where-azure")
    assert run["status"] == "failed" and "in backend azure" in run["reason"], run


def test_instances_pin_a_run_to_nodes_by_name_hostname_or_fleet_number(
    stack: Stack, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.dstack.yml"
    fleet.write_text("type: fleet\nname: pinned-a10s\nnodes: 0..\nresources: {gpu: A10:1}\n")
    assert stack.cli("apply", "-f", str(fleet)).returncode == 0
    try:
        pins = {
            "pin-name": ("instances: [kwok-a10-1]", "kwok-a10-1"),
            "pin-host": ("instances: [{hostname: kwok-a10-0}]", "kwok-a10-0"),
            # A fleet's instances are its nodes in name order: 1 is the second A10 node.
            "pin-fleet": ("instances: [{fleet: pinned-a10s, instance: 1}]", "kwok-a10-1"),
        }
        for name, (extra, node) in pins.items():
            applied = _apply(stack, tmp_path, name, extra)
            assert applied.returncode == 0, applied.stdout + applied.stderr
            assert [j["node"] for j in _finished(stack, name)["jobs"]] == [node], name
    finally:
        stack.cli("fleet", "delete", "pinned-a10s")


def test_an_instance_that_names_no_node_is_refused_by_the_plan_and_fails_a_submitted_run(
    stack: Stack, tmp_path: Path
) -> None:
    applied = _apply(stack, tmp_path, "pin-nowhere", "instances: [nowhere-0]")
    assert applied.returncode != 0, applied.stdout
    assert "instances.0: no node is instance nowhere-0" in applied.stderr, applied.stderr
    assert "pin-nowhere" not in stack.cli("ps", "-a").stdout  # nothing stored
    # Through the API, which plans nothing: accepted, then failed by the scheduler.
    body = {"type": "task", "name": "pin-api", "commands": ["x"], "instances": ["nowhere-0"]}
    with stack.client() as c:
        assert c.post("/api/projects/main/runs", json={"configuration": body}).status_code == 202
    run = ended(stack, "pin-api")
    assert run["status"] == "failed" and "no node is instance nowhere-0" in run["reason"], run
