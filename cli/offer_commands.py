"""What the cluster has: ``berth offer`` (what a request can get now) and ``berth nodes``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.client import BerthClient, load_client_config
from cli.console import out
from shared.settings import load_settings


def offer(
    gpu: Annotated[str | None, typer.Option(help="GPU spec, e.g. A100:80GB:2 or 24GB..")] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU range, e.g. 4..")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory range, e.g. 32GB..")] = None,
    disk: Annotated[str | None, typer.Option(help="Disk range, e.g. 100GB..")] = None,
    nodes: Annotated[int, typer.Option(help="Nodes needed together.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show which nodes can take a request now; with no options, the GPUs, grouped by model."""
    overview = not any((gpu, cpu, memory, disk)) and nodes == 1
    if overview:
        # Any node with a free GPU, whatever its CPU and memory: what dstack's offer lists.
        gpu, cpu, memory = "1..", "1..", "0GB.."
    client = _client()
    try:
        result = client.offers(gpu=gpu, cpu=cpu, memory=memory, disk=disk, nodes=nodes)
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    if result.get("access_mode", "cluster") != "cluster":
        print_access(result)  # no node is known: the reason says so, the quota is what is
    elif not result["offers"]:
        out.print(result["reason"] or "no offers")
    elif overview:
        _print_gpu_groups(result["offers"])
    else:
        print_offers(result["offers"], title=result["summary"])
    print_unidentified(result.get("unidentified") or [])


def _print_gpu_groups(offers: list[dict[str, Any]]) -> None:
    """One row per GPU model and memory: how many nodes have it free, and how many GPUs."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for o in offers:
        key = (o["gpu"] or "unidentified", o["gpu_memory"] or "-", o.get("gpu_source") or "-")
        groups.setdefault(key, []).append(o)
    table = Table(title="free GPUs now (berth offer --gpu A100:2 for a request)")
    table.add_column("GPU", no_wrap=True)
    for header in ("MEMORY", "SOURCE", "NODES", "FREE GPUS", "MOST ON ONE NODE", "PRICE"):
        table.add_column(header)
    for (name, memory, source), rows in sorted(
        groups.items(), key=lambda kv: -max(r["free"] for r in kv[1])
    ):
        prices = sorted({str(r["price"]) for r in rows if r["price"]})
        table.add_row(
            name,
            memory,
            source,
            str(len(rows)),
            f"{sum(r['free'] for r in rows)}/{sum(r['total'] for r in rows)}",
            str(max(r["free"] for r in rows)),
            ", ".join(prices) or "-",
        )
    out.print(table)


def print_offers(offers: list[dict[str, Any]], *, title: str) -> None:
    # Node names are never cut (a user types them); the backend column gives way first.
    table = Table("#", "BACKEND", title=title)
    # A project with several clusters: each is a region, as dstack shows a context.
    regions = any(o.get("cluster", "") not in ("", "default") for o in offers)
    if regions:
        table.add_column("REGION", no_wrap=True)
    table.add_column("NODE", no_wrap=True, min_width=max([4, *(len(o["node"]) for o in offers)]))
    for header in ("GPU", "MEMORY", "COUNT", "FREE/TOTAL", "PRICE"):
        table.add_column(header)
    for i, o in enumerate(offers, start=1):
        table.add_row(
            str(i),
            o["backend"],
            *([o.get("cluster", "")] if regions else []),
            o["node"],
            o["gpu"] or "-",
            o["gpu_memory"] or "-",
            str(o["count"]),
            f"{o['free']}/{o['total']}",
            o["price"] or "-",
        )
    out.print(table)


def print_access(result: dict[str, Any]) -> None:
    """In namespace-only mode: that node offers are unknown, and what the quota allows."""
    if result.get("access_mode", "cluster") == "cluster":
        return
    out.print(f"[yellow]{result['reason']}[/yellow]")
    for line in result.get("quota") or []:
        out.print(f"  quota {line}")


def pod_requests_line(requests: dict[str, str]) -> str:
    """What each pod asks Kubernetes for, before anything is submitted."""
    shown = " ".join(f"{k}={v}" for k, v in requests.items()) or "nothing"
    disk = "" if "ephemeral-storage" in requests else " (no ephemeral-storage: disk not set)"
    return f"each pod requests: {shown}{disk}"


def nodes(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the cluster's nodes: each GPU's name, where the name came from, and what is free."""
    client = _client()
    try:
        result = client.nodes()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    rows = result["nodes"]
    table = Table(title="nodes (SOURCE: the labels that named the GPU)")
    # A project with several clusters: node names may repeat, the cluster tells them apart.
    regions = any(n.get("cluster", "") not in ("", "default") for n in rows)
    if regions:
        table.add_column("REGION", no_wrap=True)
    table.add_column("NODE", no_wrap=True, min_width=max([4, *(len(n["name"]) for n in rows)]))
    # CPU and memory are in --json: the GPU columns must fit an 80-column terminal.
    for header in ("GPU", "MEMORY", "SOURCE", "FREE/TOTAL", "STATUS"):
        table.add_column(header)
    for node in rows:
        status = "ready" if node["schedulable"] else "; ".join(node["reasons"])
        gpus = node["gpus"] or [None]
        for gpu in gpus:
            table.add_row(
                *([node.get("cluster", "")] if regions else []),
                node["name"],
                (gpu["name"] or "unidentified") if gpu else "-",
                (gpu["memory"] or "-") if gpu else "-",
                gpu["source"] if gpu else "-",
                f"{gpu['free']}/{gpu['count']}" if gpu else "-",
                status,
            )
    out.print(table)
    print_unidentified(result["unidentified"])


def print_unidentified(unidentified: list[dict[str, Any]]) -> None:
    """Nodes whose GPUs no label names: no request for a model or memory can use them."""
    if not unidentified:
        return
    out.print(
        f"[yellow]{len(unidentified)} GPU group(s) have no name, so no request for a model"
        " or memory size can use them:[/yellow]"
    )
    for u in unidentified:
        out.print(f"  {u['node']}: {u['count']} {u['resource']}; to fix: {u['fix']}")


def _client() -> BerthClient:
    return BerthClient(load_client_config(load_settings().home))
