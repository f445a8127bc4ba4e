"""In-process worker contexts for the tests in this package.

Each context has a server config of the test's own (on the session's local
cluster, or on a kubeconfig the test breaks on purpose), its own Redis key
prefix (no Berth process of the session sees its messages) and a published
inventory of two 8-GPU A100 nodes, ``a0`` and ``a1``, for every project's
cluster. Everything under the prefix is deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from shared.configuration.parse import parse_run_configuration
from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.settings import RedisSettings, SchedulingSettings, Settings
from shared.state.inventory_store import CHANNEL
from shared.state.jobs import jobs_for
from shared.state.records import Event, Run
from workers.context import WorkerContext, build_context

GPU = "nvidia.com/gpu"
NODES = {"a0": 8, "a1": 8}


@contextmanager
def worker_context(
    redis_url: str,
    prefix: str,
    directory: Path,
    projects: list[dict[str, Any]],
    *,
    scheduling: SchedulingSettings | None = None,
) -> Iterator[WorkerContext]:
    """A :class:`WorkerContext` whose server config holds ``projects``."""
    config = directory / "server" / "config.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"projects": projects}))
    settings = Settings(
        home=directory,
        server_config=config,
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        scheduling=scheduling or SchedulingSettings(),
    )
    ctx = build_context(settings)
    for project in projects:
        ctx.store.publish_inventory(
            ctx.clusters.key_for(project["name"]), two_a100_nodes().to_json(), CHANNEL
        )
    try:
        yield ctx
    finally:
        forget_prefix(ctx, prefix)
        ctx.close()


def forget_prefix(ctx: WorkerContext, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the test's own installation)."""
    for stored in ctx.store.r.scan_iter(f"{prefix}:*", count=1000):
        ctx.store.r.delete(stored)


def backend(kubeconfig: str | Path, **extra: Any) -> dict[str, Any]:
    """A ``type: kubernetes`` backend on ``kubeconfig``, plus ``extra`` settings."""
    return {"type": "kubernetes", "kubeconfig": {"filename": str(kubeconfig)}, **extra}


def two_a100_nodes() -> GpuInventory:
    nodes = []
    for name, count in NODES.items():
        group = GpuGroup(
            vendor=GpuVendor.NVIDIA, resource=GPU, count=count, name="A100", known=True
        )
        room = Resources(cpu_millicores=96_000, memory_bytes=2**40, gpus={GPU: count})
        nodes.append(NodeInventory(name=name, gpus=(group,), allocatable=room, free=room))
    return GpuInventory(nodes=tuple(nodes))


def submit(
    ctx: WorkerContext, name: str, gpu: str, *, project: str = "main", nodes: int = 1
) -> Run:
    """Store a task asking for ``gpu`` (e.g. ``A100:2``) as the API would, without sending."""
    conf = parse_run_configuration(
        f"type: task\nname: {name}\nnodes: {nodes}\ncommands: [train]\nresources: {{gpu: {gpu}}}\n"
    )
    run = Run(
        id=f"{project}-{name}",
        project=project,
        name=name,
        user="tester",
        configuration=conf.model_dump(mode="json"),
        configuration_type="task",
    )
    jobs = jobs_for(run, conf)
    run.job_ids = [j.id for j in jobs]
    ctx.store.create_run(run, jobs, Event(at=time.time(), kind="status", message="submitted"))
    return run
