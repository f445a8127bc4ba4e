"""Fleet ``blocks`` through the real scheduling pass: runs naming a fleet split in 4 take
whole quarters of its 8-GPU nodes, and their pods request exactly those quarters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from shared.configuration.parse import parse_configuration, parse_run_configuration
from shared.state.jobs import jobs_for
from shared.state.records import Event, Fleet, Run
from tests.workers.worlds import backend, worker_context
from workers import scheduling
from workers.context import WorkerContext
from workers.podspec import PodContext, build_job_objects

pytestmark = pytest.mark.integration

QUARTER_CPU = 96_000 // 4  # the test nodes: 8 A100, 96 CPUs, 1 TiB of memory
QUARTER_MEMORY = 2**40 // 4


@pytest.fixture
def ctx(local_cluster: ClusterState, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerContext]:
    main = {"name": "main", "backends": [backend(local_cluster.kubeconfig)]}
    with worker_context(local_cluster.redis_url, redis_prefix, tmp_path, [main]) as context:
        conf = parse_configuration(
            "type: fleet\nname: quarters\nnodes: 0..1\nresources: {gpu: A100:8}\nblocks: 4\n"
        )
        context.store.put_fleet(
            Fleet(name="quarters", project="main", configuration=conf.model_dump(mode="json"))
        )
        yield context


def _submit(ctx: WorkerContext, name: str, gpus: int) -> Run:
    conf = parse_run_configuration(
        f"type: task\nname: {name}\nfleets: [quarters]\ncommands: [train]\n"
        f"resources: {{gpu: A100:{gpus}}}\n"
    )
    run = Run(
        id=f"main-{name}",
        project="main",
        name=name,
        user="tester",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
    )
    jobs = jobs_for(run, conf)
    run.job_ids = [j.id for j in jobs]
    ctx.store.create_run(run, jobs, Event(at=time.time(), kind="status", message="submitted"))
    return run


def test_runs_on_a_blocked_fleet_take_whole_blocks_and_their_pods_request_them(
    ctx: WorkerContext,
) -> None:
    runs = [_submit(ctx, "one-gpu", 1), _submit(ctx, "three-gpus", 3)]

    result = scheduling.run_pass(ctx)

    assert sorted(result.placed) == ["one-gpu", "three-gpus"]
    small, big = (ctx.store.jobs_of(ctx.store.get_run(r.id))[0] for r in runs)
    assert small.placement is not None and big.placement is not None
    # The fleet has one node (nodes: 0..1): both runs share it, block by block.
    assert small.placement.node == big.placement.node
    assert (small.placement.gpus, small.placement.cpu_milli) == (2, QUARTER_CPU)
    assert (big.placement.gpus, big.placement.cpu_milli) == (4, 2 * QUARTER_CPU)
    assert big.placement.memory_bytes == 2 * QUARTER_MEMORY

    run = ctx.store.get_run(runs[0].id)
    conf = parse_run_configuration(
        "type: task\nname: one-gpu\nfleets: [quarters]\ncommands: [train]\n"
        "resources: {gpu: A100:1}\n"
    )
    pod = build_job_objects(run, small, conf, PodContext(default_image="berth.local/run:x")).pod
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {
        "cpu": f"{QUARTER_CPU}m",
        "memory": str(QUARTER_MEMORY),
        "nvidia.com/gpu": "2",
    }


def test_a_run_wanting_more_than_the_blocks_left_waits(ctx: WorkerContext) -> None:
    _submit(ctx, "half", 4)  # two blocks
    _submit(ctx, "other-half", 3)  # two blocks: the node is full
    late = _submit(ctx, "late", 1)

    result = scheduling.run_pass(ctx)

    assert sorted(result.placed) == ["half", "other-half"]
    assert ctx.store.get_run(late.id).status == "pending"
