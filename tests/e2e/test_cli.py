"""End to end through the ``berth`` CLI: offers, logs, following, fleets."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from cli.local import pod_logs
from cli.local.cluster import ClusterState
from shared import kube
from tests.polling import wait_until
from tests.stack import BERTH, Stack

pytestmark = pytest.mark.integration


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.dstack.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_offer_shows_the_default_pools_in_a_table(stack: Stack) -> None:
    result = stack.cli("offer", "--gpu", "A100:40GB:2")
    assert result.returncode == 0, result.stderr
    assert "kwok-a100-0" in result.stdout and "kwok-a100-1" in result.stdout
    assert "A100" in result.stdout and "40GB" in result.stdout
    assert "kwok-h100" not in result.stdout


def test_offer_with_no_options_groups_the_free_gpus_by_model(stack: Stack) -> None:
    result = stack.cli("offer")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert {"H100", "A100", "A10"} <= set(rows), result.stdout
    # Four H100 nodes of eight (others' runs may hold a few): one row, not four.
    h100 = [cell.strip() for cell in rows["H100"].split("│")]
    assert h100[2] == "80GB" and h100[3] == "gfd", rows["H100"]
    assert h100[4] in {"1", "2", "3", "4"}, rows["H100"]
    assert "kwok-h100-0" not in result.stdout


def test_offer_as_json_lists_every_h100_node_with_its_price(stack: Stack) -> None:
    result = stack.cli("offer", "--gpu", "H100:80GB:1", "--json")
    assert result.returncode == 0, result.stderr
    offers = json.loads(result.stdout)["offers"]
    h100 = {o["node"] for o in offers}
    assert {f"kwok-h100-{i}" for i in range(4)} <= h100 | _busy_h100(stack)
    assert all(o["gpu"] == "H100" and o["gpu_memory"] == "80GB" for o in offers)
    assert all(o["price"] == "$2.50/h" for o in offers)


def _busy_h100(stack: Stack) -> set[str]:
    # Other tests may hold whole H100 nodes at this moment; those are not offered.
    runs = json.loads(stack.cli("ps", "--json").stdout)
    return {j["node"] for r in runs for j in r["jobs"] if j["node"]}


def test_offer_says_plainly_when_nothing_could_ever_fit(stack: Stack) -> None:
    result = stack.cli("offer", "--gpu", "H100:64")
    assert result.returncode == 0, result.stderr
    assert "impossible" in result.stdout


def test_offer_rejects_a_bad_gpu_spec_naming_the_field(stack: Stack) -> None:
    result = stack.cli("offer", "--gpu", "A100:banana")
    assert result.returncode == 1
    assert "gpu" in result.stderr and "banana" in result.stderr


def test_apply_follows_the_run_to_the_end_and_prints_its_logs(
    stack: Stack, kube_admin: kube.Kube, local_cluster: ClusterState, tmp_path: Path
) -> None:
    # KWOK runs nothing, so the "container output" is served from a file we set.
    pod_logs.set_pod_logs(
        kube_admin,
        Path(local_cluster.directory),
        namespace=stack.namespace,
        pod="berth-main-followed-0-0",
        lines=["epoch 1 loss 0.9", "epoch 2 loss 0.4"],
    )
    conf = _write(
        tmp_path,
        """
        type: task
        name: followed
        commands: [python train.py]
        env: {KWOK_RUN_FOR: 2s}
        """,
    )
    result = stack.cli("apply", "-f", str(conf), "-y", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 2 loss 0.4" in result.stdout
    assert "followed: done" in result.stdout
    assert "submitted" in result.stdout

    logs = stack.cli("logs", "followed")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines()[:2] == ["epoch 1 loss 0.9", "epoch 2 loss 0.4"]


def test_logs_follow_ends_when_the_run_is_stopped(
    stack: Stack, kube_admin: kube.Kube, local_cluster: ClusterState, tmp_path: Path
) -> None:
    pod_logs.set_pod_logs(
        kube_admin,
        Path(local_cluster.directory),
        namespace=stack.namespace,
        pod="berth-main-tailed-0-0",
        lines=["serving"],
    )
    conf = _write(tmp_path, "type: task\nname: tailed\ncommands: [serve]\n")
    assert stack.cli("apply", "-f", str(conf), "-y", "-d").returncode == 0

    wait_until(lambda: _status(stack, "tailed") == "running", timeout=60, what="tailed running")

    follower = subprocess.Popen(
        [BERTH, "logs", "-f", "tailed"], env=stack.env, stdout=subprocess.PIPE, text=True
    )
    assert follower.stdout is not None
    with follower.stdout:
        try:
            assert follower.stdout.readline().strip() == "serving"
            assert stack.cli("stop", "tailed").returncode == 0
            assert follower.wait(timeout=30) == 0
        finally:
            follower.kill()
            follower.wait()


def _status(stack: Stack, name: str) -> str | None:
    runs = json.loads(stack.cli("ps", "-a", "--json").stdout)
    return next((r["status"] for r in runs if r["name"] == name), None)


def test_fleet_apply_list_and_delete(stack: Stack, tmp_path: Path) -> None:
    conf = _write(
        tmp_path,
        """
        type: fleet
        name: a10-pool
        placement: cluster
        nodes: 0..
        resources: {gpu: A10:1}
        """,
    )
    # `berth apply -f` takes every type, as `dstack apply -f` does, and prints the FLEET table.
    applied = stack.cli("apply", "-f", str(conf))
    assert applied.returncode == 0, applied.stderr
    assert "FLEET" in applied.stdout and "a10-pool" in applied.stdout
    assert applied.stdout.count("kwok-a10-") == 2, applied.stdout
    again = stack.cli("fleet", "apply", "-f", str(conf))  # the older spelling still works
    assert again.returncode == 0 and "a10-pool" in again.stdout, again.stderr

    listing = stack.cli("fleet", "list")
    assert listing.returncode == 0, listing.stderr
    for header in ("FLEET", "INSTANCE", "BACKEND", "GPU", "PRICE", "STATUS", "CREATED"):
        assert header in listing.stdout
    assert "kwok-a10-0" in listing.stdout and "kwok-a10-1" in listing.stdout
    assert "kwok-h100" not in listing.stdout

    assert stack.cli("fleet", "delete", "a10-pool").returncode == 0
    assert "a10-pool" not in stack.cli("fleet", "list").stdout


def test_delete_removes_a_finished_runs_pods_and_records(
    stack: Stack, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    conf = _write(
        tmp_path, "type: task\nname: short-lived\ncommands: [x]\nenv: {KWOK_RUN_FOR: 1s}\n"
    )
    assert stack.cli("apply", "-f", str(conf), "-y", "-d").returncode == 0
    wait_until(lambda: _status(stack, "short-lived") == "done", timeout=60, what="done")
    refused = stack.cli("delete", "no-such-run")
    assert refused.returncode == 1 and "no-such-run" in refused.stderr

    assert stack.cli("delete", "short-lived").returncode == 0

    def gone() -> bool:
        pods = kube_admin.call(
            kube_admin.core.list_namespaced_pod,
            stack.namespace,
            label_selector=f"{kube.LABEL_RUN}=short-lived",
        ).items
        listed = json.loads(stack.cli("ps", "-a", "--json").stdout)
        return not pods and all(r["name"] != "short-lived" for r in listed)

    wait_until(gone, timeout=30, what="run and pods deleted")
