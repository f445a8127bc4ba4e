"""Groups asking for different resources: each job placed by its own group's request.

dstack's Ray example (a CPU head, GPU workers) and its PD-disaggregation services (a
CPU router, GPU prefill and decode replicas) need it; the whole run is still placed
all at once or not at all.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.runs import ended
from tests.stack import Stack

pytestmark = pytest.mark.integration


def test_a_cpu_head_and_two_gpu_workers_land_each_on_a_node_that_fits_it(
    stack: Stack, tmp_path: Path
) -> None:
    conf = tmp_path / "ray.dstack.yml"
    conf.write_text(
        textwrap.dedent(
            """
            type: task
            name: mixed-ray
            env: {KWOK_RUN_FOR: 1s}
            groups:
              - name: head
                commands: [ray start --head]
                resources: {cpu: 2, memory: 1GB}
              - name: workers
                nodes: 2
                commands: [ray start --address=head]
                resources: {gpu: A100:1, cpu: 1.., memory: 1GB..}
            """
        )
    )
    applied = stack.cli("apply", "-f", str(conf), "-y", "-d")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    run = ended(stack, "mixed-ray")
    assert run["status"] == "done", (run["reason"], run["jobs"])
    nodes: dict[str, list[str]] = {}
    for job in run["jobs"]:
        nodes.setdefault(job["group"], []).append(job["node"])
    assert [n.startswith("kwok-cpu-") for n in nodes["head"]] == [True], nodes
    assert sorted(nodes["workers"]) == ["kwok-a100-0", "kwok-a100-1"], nodes
    gpus = {j["group"]: j["gpus"] for j in run["jobs"]}
    assert gpus == {"head": 0, "workers": 1}


def test_the_plan_refuses_a_group_no_node_could_take_naming_nothing_else(
    stack: Stack, tmp_path: Path
) -> None:
    conf = tmp_path / "never.dstack.yml"
    conf.write_text(
        "type: task\nname: mixed-never\ngroups:\n"
        "  - {name: a, commands: [x], resources: {gpu: A100:1}}\n"
        "  - {name: b, commands: [x], resources: {gpu: B200:1}}\n"
    )
    applied = stack.cli("apply", "-f", str(conf), "-y", "-d")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    run = ended(stack, "mixed-never")
    assert run["status"] == "failed" and "impossible" in run["reason"], run["reason"]
    assert "B200" in run["reason"], run["reason"]
