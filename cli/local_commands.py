"""``berth local``: run Berth's embedded control plane on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.console import err, out
from cli.local import cluster
from cli.local.nodes import DEFAULT_POOLS_FILE
from shared import kube
from shared.settings import load_settings

app = typer.Typer(
    help="The embedded local Kubernetes control plane (etcd, apiserver, KWOK GPU nodes, Redis)."
)


@app.command()
def up(
    pools: Annotated[
        Path, typer.Option(help="Node-pool file for the fake GPU nodes.")
    ] = DEFAULT_POOLS_FILE,
    real_nodes: Annotated[
        int,
        typer.Option(
            help="Kubelet + containerd nodes that run real containers (fake GPUs) "
            "beside the KWOK pools; needs root."
        ),
    ] = 2,
    no_real_node: Annotated[
        bool,
        typer.Option(
            "--no-real-node", help="KWOK nodes only: for hosts where runc cannot start containers."
        ),
    ] = False,
) -> None:
    """Build (once) and start the local cluster and Redis; print its nodes."""
    settings = load_settings()
    started = time.monotonic()
    state, already = cluster.up(
        settings.local_dir,
        pools_file=pools,
        real_nodes=0 if no_real_node else real_nodes,
        timeout_s=settings.local.startup_timeout_s,
        progress=lambda msg: err.print(f"[dim]{msg}[/dim]"),
    )
    if already:
        out.print(f"the local cluster is already running (since {time.ctime(state.started_at)})")
    else:
        out.print(f"local cluster up in {time.monotonic() - started:.1f}s")
    out.print(f"kubeconfig: {state.kubeconfig}\nredis: {state.redis_url}")
    _print_nodes(Path(state.kubeconfig))


@app.command()
def down() -> None:
    """Stop only the processes that ``berth local up`` started, by PID."""
    stopped = cluster.down(load_settings().local_dir)
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Show which local cluster processes run."""
    settings = load_settings()
    procs = cluster.status(settings.local_dir)
    if procs is None:
        out.print("the local cluster is not running (run: berth local up)")
        raise typer.Exit(1)
    table = Table("PROCESS", "STATUS")
    for name, alive in procs.items():
        table.add_row(name, "[green]running[/green]" if alive else "[red]stopped[/red]")
    out.print(table)
    if not all(procs.values()):
        raise typer.Exit(1)


@app.command()
def nodes() -> None:
    """List the local cluster's nodes and their GPUs."""
    state = cluster.read_state(load_settings().local_dir)
    if state is None:
        out.print("the local cluster is not running (run: berth local up)")
        raise typer.Exit(1)
    _print_nodes(Path(state.kubeconfig))


def _print_nodes(kubeconfig: Path) -> None:
    k = kube.connect(kubeconfig=kubeconfig)
    try:
        items = k.call(k.core.list_node).items
    finally:
        k.close()
    table = Table("NODE", "GPU", "GPUS", "GPU MEMORY", "CPU", "MEMORY", "READY")
    for n in sorted(items, key=lambda n: n.metadata.name):
        labels = n.metadata.labels or {}
        alloc = n.status.allocatable or {}
        mem = labels.get("nvidia.com/gpu.memory")
        ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        table.add_row(
            n.metadata.name,
            labels.get("nvidia.com/gpu.product", "-"),
            alloc.get("nvidia.com/gpu", "0"),
            f"{int(mem) // 1024}GB" if mem else "-",
            alloc.get("cpu", "?"),
            alloc.get("memory", "?"),
            "yes" if ready else "no",
        )
    out.print(table)
