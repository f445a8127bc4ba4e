"""Managed clusters' GPU labels, end to end: offered by name, placed, and reported.

The local cluster's default pools include nodes labelled as GKE, Karpenter on
EKS, CoreWeave and a bare cloud instance type label their GPU nodes (no GPU
Operator), so each scheme is read from a real Node object by the proxy worker's
inventory watch and matched by the scheduler.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import kube
from shared.errors import KubeNotFound
from tests.e2e.runs import ended
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

SCHEMES = [
    ("T4", "kwok-gke-t4-0", "gke", "16GB"),
    ("A10G", "kwok-eks-a10g-0", "karpenter", "24GB"),
    ("A40", "kwok-cw-a40-0", "coreweave", "48GB"),
    ("V100", "kwok-aws-v100-0", "instance-type", "16GB"),
]


@pytest.mark.parametrize(("gpu", "node", "source", "memory"), SCHEMES)
def test_each_managed_scheme_gpu_is_offered_by_name_with_its_source(
    stack: Stack, gpu: str, node: str, source: str, memory: str
) -> None:
    result = stack.cli("offer", "--gpu", f"{gpu}:{memory}:1", "--json")
    assert result.returncode == 0, result.stderr
    offers = json.loads(result.stdout)["offers"]
    assert [(o["node"], o["gpu"], o["gpu_memory"], o["gpu_source"]) for o in offers] == [
        (node, gpu, memory, source)
    ]


@pytest.mark.parametrize(("gpu", "node", "source", "memory"), SCHEMES)
def test_a_run_for_each_managed_scheme_gpu_is_placed_on_that_node(
    stack: Stack,
    kube_admin: kube.Kube,
    tmp_path: Path,
    gpu: str,
    node: str,
    source: str,
    memory: str,
) -> None:
    name = f"scheme-{source}"
    conf = tmp_path / "conf.dstack.yml"
    conf.write_text(
        textwrap.dedent(
            f"""
            type: task
            name: {name}
            commands: [nvidia-smi]
            resources: {{gpu: "{gpu}:1", cpu: 1.., memory: 1GB..}}
            env: {{KWOK_RUN_FOR: 1s}}
            """
        )
    )
    applied = stack.cli("apply", "-f", str(conf), "-y", "-d")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    run = ended(stack, name)
    assert run["status"] == "done", run
    assert [j["node"] for j in run["jobs"]] == [node]


def test_nodes_lists_each_gpu_with_the_labels_that_named_it(stack: Stack) -> None:
    result = stack.cli("nodes", "--json")
    assert result.returncode == 0, result.stderr
    found = {
        n["name"]: (g["name"], g["source"], g["memory"])
        for n in json.loads(result.stdout)["nodes"]
        for g in n["gpus"]
    }
    assert found["kwok-h100-0"] == ("H100", "gfd", "80GB")
    for gpu, node, source, memory in SCHEMES:
        assert found[node] == (gpu, source, memory)
    table = stack.cli("nodes")
    assert table.returncode == 0, table.stderr
    assert "SOURCE" in table.stdout and "karpenter" in table.stdout


@pytest.fixture
def unlabelled_node(kube_admin: kube.Kube) -> Iterator[str]:
    """A GPU node as a cluster without GFD or a managed scheme has it: a bare device plugin.

    Tainted with a taint Berth's pods do not tolerate (they tolerate the GPU taint),
    so that no other test's run lands on it while it exists.
    """
    name = f"kwok-bare-{secrets.token_hex(3)}"
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}
    body = {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": [{"key": "berth.test/bare", "value": "x", "effect": "NoSchedule"}]},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }
    kube_admin.call(kube_admin.core.create_node, body)
    yield name
    with contextlib.suppress(KubeNotFound):
        kube_admin.call(kube_admin.core.delete_node, name)


def test_gpus_no_label_names_are_listed_with_the_label_that_would_fix_it(
    stack: Stack, unlabelled_node: str
) -> None:
    def listed() -> list[dict[str, object]]:
        result = stack.cli("nodes", "--json")
        return [
            u for u in json.loads(result.stdout)["unidentified"] if u["node"] == unlabelled_node
        ]

    wait_until(lambda: listed() != [], timeout=30, what="the unlabelled node in the inventory")
    (entry,) = listed()
    assert (entry["resource"], entry["count"]) == ("nvidia.com/gpu", 8)
    assert "nvidia.com/gpu.product=" in str(entry["fix"])

    table = stack.cli("nodes")
    assert f"{unlabelled_node}: 8 nvidia.com/gpu; to fix: label the node" in table.stdout


def test_a_request_that_only_an_unnamed_gpu_could_meet_says_so_not_just_impossible(
    stack: Stack, unlabelled_node: str
) -> None:
    def reason() -> str:
        result = stack.cli("offer", "--gpu", "B200:8", "--json")
        return str(json.loads(result.stdout)["reason"])

    wait_until(lambda: unlabelled_node in reason(), timeout=30, what="the unnamed node named")
    text = reason()
    assert text.startswith("impossible: 8x B200")
    assert "no label names" in text and "nvidia.com/gpu.product=" in text
