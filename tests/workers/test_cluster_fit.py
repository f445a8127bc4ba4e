"""The scheduling pass's cluster reads when the apiserver does not answer.

Runs whose placement depends on the cluster (here: a backend ``node_selector``)
wait with the reason, the pass still finishes, and only the first read of the
pass pays for the unreachable apiserver: the others are not tried again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from cli.local.cluster import ClusterState
from shared.metrics import KUBE_ERRORS
from shared.state.records import RunStatus
from tests.ssh.world import free_loopback_port
from tests.workers.worlds import backend, submit, worker_context
from workers import scheduling
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


@pytest.fixture
def unreachable_ctx(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> Iterator[WorkerContext]:
    """Project ``main`` selects nodes by label, on a kubeconfig whose apiserver is gone."""
    kubeconfig = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_loopback_port()}"
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(yaml.safe_dump(kubeconfig))
    main = {"name": "main", "backends": [backend(dead, pod={"node_selector": {"team": "ml"}})]}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, [main]) as context:
        yield context


def _unreachable_errors() -> float:
    KUBE_ERRORS.labels("0")  # the series exists from here on, even at 0
    value = REGISTRY.get_sample_value("berth_kubernetes_api_errors_total", {"code": "0"})
    assert value is not None
    return value


def test_an_unreachable_apiserver_holds_the_runs_that_need_it_and_is_asked_once(
    unreachable_ctx: WorkerContext,
) -> None:
    ctx = unreachable_ctx
    runs = [submit(ctx, f"r{i}", "A100:1") for i in range(5)]
    before = _unreachable_errors()

    result = scheduling.run_pass(ctx)

    assert result.placed == [] and result.failed == []
    assert result.waiting == 5
    assert _unreachable_errors() - before == 1
    for run in runs:
        waiting = ctx.store.get_run(run.id)
        assert waiting.status == RunStatus.PENDING
        assert waiting.reason.startswith("cannot read where the run may go: Kubernetes API"), (
            waiting.reason
        )


@pytest.fixture
def half_broken_ctx(
    local_cluster: ClusterState, redis_prefix: str, tmp_path: Path
) -> Iterator[WorkerContext]:
    """``main`` on the local cluster; ``broken`` selects nodes, on a kubeconfig that
    does not load."""
    empty = tmp_path / "empty-kubeconfig"
    empty.write_text("")
    projects = [
        {"name": "main", "backends": [backend(local_cluster.kubeconfig)]},
        {"name": "broken", "backends": [backend(empty, pod={"node_selector": {"team": "ml"}})]},
    ]
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, projects) as context:
        yield context


def test_a_project_whose_kubeconfig_does_not_load_holds_only_its_own_runs(
    half_broken_ctx: WorkerContext,
) -> None:
    ctx = half_broken_ctx
    healthy = submit(ctx, "ok", "A100:1")
    stuck = submit(ctx, "stuck", "A100:1", project="broken")

    result = scheduling.run_pass(ctx)

    assert result.placed == ["ok"]
    assert ctx.store.get_run(healthy.id).status == RunStatus.PROVISIONING
    held = ctx.store.get_run(stuck.id)
    assert held.status == RunStatus.PENDING
    assert held.reason.startswith("cannot reach the run's cluster: kubeconfig: cannot load"), (
        held.reason
    )
