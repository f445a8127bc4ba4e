"""``berth local``: run Berth's embedded control plane on this machine."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.client import BerthClient, ClientConfig
from cli.console import err, out
from cli.local import berth, cluster, realnode
from cli.local.nodes import DEFAULT_POOLS_FILE
from cli.run_commands import exit_code_of, submit_run
from shared import kube
from shared.errors import BerthError, ConfigError, LocalClusterError
from shared.settings import load_settings

app = typer.Typer(
    help="Berth on this machine: a local Kubernetes cluster (control plane, KWOK GPU pools, "
    "real kubelet nodes), Redis, and Berth's own processes."
)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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
    example: Annotated[
        Path | None,
        typer.Option(help="Configuration to apply and follow once everything runs."),
    ] = EXAMPLES / "task.dstack.yml",
    no_example: Annotated[bool, typer.Option("--no-example", help="Apply nothing.")] = False,
    api_processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=berth.MAX_API_PROCESSES,
            help="Berth API processes sharing the one API port (SO_REUSEPORT), as replicas"
            " behind a Service would; each takes about 130 MB.",
        ),
    ] = 1,
) -> None:
    """Build (once) and start the local cluster, its real nodes and Berth; run an example."""
    settings = load_settings()
    started = time.monotonic()
    count = 0 if no_real_node else real_nodes
    if count:
        try:
            realnode.node.preflight()
        except BerthError as e:
            raise LocalClusterError(f"{e} (or: berth local up --no-real-node)") from e
    state, already = cluster.up(
        settings.local_dir,
        pools_file=pools,
        real_nodes=count,
        berth_home=settings.home,
        api_processes=api_processes,
        timeout_s=settings.local.startup_timeout_s,
        progress=lambda msg: err.print(f"[dim]{msg}[/dim]"),
    )
    if already:
        out.print(f"the local cluster is already running (since {time.ctime(state.started_at)})")
    else:
        out.print(f"local cluster and Berth up in {time.monotonic() - started:.1f}s")
    _print_nodes(Path(state.kubeconfig))
    run = None
    if not already and not no_example and example is not None and state.berth is not None:
        run = _run_example(example, state.berth)
    _print_summary(state, settings.home)
    if run is not None and run["status"] == "failed":
        raise typer.Exit(exit_code_of(run))


def _run_example(path: Path, local: berth.LocalBerth) -> dict[str, Any]:
    out.print(f"\n[bold]berth apply -f {_shown(path)}[/bold]")
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}", field="example") from e
    client = BerthClient(ClientConfig(url=local.api_url, token=local.admin_token))
    try:
        return submit_run(client, text, yes=True, detach=False)
    finally:
        client.close()


def _print_summary(state: cluster.ClusterState, home: Path) -> None:
    local = state.berth
    logs = Path(state.directory) / "logs"
    if local is None:
        out.print(f"kubeconfig: {state.kubeconfig}\nredis: {state.redis_url}\nlogs: {logs}")
        return
    user, password = local.flower_auth.split(":", 1)
    out.print(
        "\n[bold]Berth is running[/bold]\n"
        f"  API         {local.api_url}   (docs: /docs; token in {home}/config.yml)\n"
        f"  dashboard   {local.api_url}/dashboard   (log in with that token)\n"
        f"  Flower      {local.flower_url}   (user {user}, password {password})\n"
        f"  logs        {logs}/\n"
        f"  server conf {local.server_config}\n"
        f"  kubeconfig  {state.kubeconfig}\n"
        "Try next:\n"
        f"  berth apply -f {_shown(EXAMPLES / 'multinode.dstack.yml')}\n"
        f"  berth apply -f {_shown(EXAMPLES / 'dev-environment.dstack.yml')}"
        "   (then ssh my-ide, or open the link it prints)\n"
        "  berth ps -a\n"
        "Stop everything: berth local down"
    )


def _shown(path: Path) -> str:
    """The path as a user would type it from where they are."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


@app.command()
def down(
    remove_images: Annotated[
        bool,
        typer.Option(
            "--remove-images",
            help="Also delete the images unpacked into the real nodes (about 2 GiB a node);"
            " the next `up` imports them again from the build cache.",
        ),
    ] = False,
) -> None:
    """Stop only the processes that ``berth local up`` started, by PID."""
    stopped = cluster.down(load_settings().local_dir, remove_images=remove_images)
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
