"""User commands over the API: apply, ps, logs, stop, delete, fleet, config."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from cli import code_bundle
from cli.client import BerthClient, ClientConfig, load_client_config, save_client_config
from cli.console import ago, err, out
from cli.dev_environment import open_dev_environment
from cli.keys import ensure_registered_key
from cli.offer_commands import pod_requests_line, print_access, print_offers
from cli.schedule_commands import print_schedules, schedule_line
from cli.shell_env import fill_from_shell
from shared.configuration.parse import parse_run_configuration
from shared.errors import ConfigError
from shared.settings import load_settings

fleet_app = typer.Typer(help="Fleets: named sets of nodes that runs can be restricted to.")

_FOLLOW_POLL_S = 0.5  # status refresh while following a run
# Running to reachable over SSH with init done; init may install packages for minutes.
_READY_S = 1800.0
FINISHED = {"done", "failed", "terminated"}


def _client() -> BerthClient:
    return BerthClient(load_client_config(load_settings().home))


def config(
    url: Annotated[str, typer.Option(help="Berth server URL.")],
    token: Annotated[str, typer.Option(help="Your API token.")],
    project: Annotated[str, typer.Option(help="Default project.")] = "main",
) -> None:
    """Save the server URL, token and project to ~/.berth/config.yml."""
    path = save_client_config(
        load_settings().home, ClientConfig(url=url, token=token, project=project)
    )
    out.print(f"saved {path}")


def apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="Configuration file (.dstack.yml format).")
    ],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    detach: Annotated[
        bool, typer.Option("-d", "--detach", help="Submit and return at once.")
    ] = False,
) -> None:
    """Apply a configuration of any type: a run (task, dev environment, service) is planned,
    submitted and followed to its end (Ctrl-C detaches); a fleet or volume is created."""
    try:
        text = file.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e}", field="file") from e
    client = _client()
    try:
        kind = configuration_type(text)
        if kind == "fleet":
            _print_fleets([client.apply_fleet(text)])
            return
        if kind == "volume":
            volume = client.apply_volume(text)
            out.print(f"volume {volume['name']}: claim {volume['claim']} ({volume['status']})")
            return
        run = submit_run(client, text, yes=yes, detach=detach, base=file.resolve().parent)
    finally:
        client.close()
    if run["status"] == "failed":
        raise typer.Exit(exit_code_of(run))


def exit_code_of(run: dict[str, Any]) -> int:
    """A failed run's exit code, as the CLI's own: its first failed job's, else 1."""
    codes = [j.get("exit_code") for j in run.get("jobs", [])]
    return next((c for c in codes if isinstance(c, int) and 0 < c < 256), 1)


def configuration_type(text: str) -> str | None:
    """The ``type`` of a configuration, to pick the endpoint; the server validates the rest."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # the server names the YAML error precisely
    return doc.get("type") if isinstance(doc, dict) else None


def submit_run(
    client: BerthClient, text: str, *, yes: bool, detach: bool, base: Path | None = None
) -> dict[str, Any]:
    """Show the plan, submit (with the code ``repos`` and ``files`` name, read relative to
    ``base``), then follow unless ``detach``; the run as last seen."""
    text = fill_from_shell(text, os.environ)
    plan = client.plan(text)
    print_offers(plan["offers"], title=f"plan: {plan['summary']}")
    out.print(pod_requests_line(plan.get("pod_requests") or {}))
    if plan.get("pod_security", "privileged") != "privileged":
        out.print(f"pod security: {plan['pod_security']} ({plan.get('pod_security_source')})")
    print_access(plan)
    if not plan["possible"]:
        out.print(f"[yellow]{plan['reason']}[/yellow]")
    if not yes and not typer.confirm("Submit the run?", default=True):
        raise typer.Exit(1)
    # Pods trust the submitter's SSH key as it is when they start: have one on file first.
    ensure_registered_key(client, load_settings().home)
    code = upload_code(client, text, base=base or Path.cwd())
    run = client.apply(text, code=code)
    if run.get("status") == "scheduled":
        out.print(f"scheduled [bold]{run['name']}[/bold]: {schedule_line(run)}")
        return run
    out.print(f"submitted [bold]{run['name']}[/bold] ({run['status']})")
    if detach:
        return run
    if run.get("type") != "dev-environment":
        return follow_run(client, run["name"])
    # A dev environment is opened, not followed to its end: see cli.dev_environment.
    run = follow_run(client, run["name"], until_running=True)
    if run["status"] != "running":
        return run
    return open_dev_environment(
        client, run["name"], home=load_settings().home, yes=yes, ready_timeout_s=_READY_S
    )


def upload_code(client: BerthClient, text: str, *, base: Path) -> str | None:
    """Pack and upload the run's ``repos`` and ``files``; the archive's sha256, or None."""
    conf = parse_run_configuration(text)
    repos, files = getattr(conf, "repos", []), getattr(conf, "files", [])
    data = code_bundle.pack(repos, files, base=base, max_bytes=load_settings().code.max_bytes)
    if data is None:
        return None
    digest = client.upload_code(data)
    out.print(
        f"sent the run's code: {len(data) / 1024:.1f} KiB ({len(repos)} repos, {len(files)} files)"
    )
    return digest


def ps(
    all_runs: Annotated[
        bool, typer.Option("-a", "--all", help="Run history too, newest first, a page at a time.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Runs per page of history.", min=1, max=1000)] = 100,
    cursor: Annotated[
        str | None, typer.Option(help="Go on from where the previous page said.")
    ] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only runs whose name starts so.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List active runs (every one); with -a, the history too."""
    client = _client()
    try:
        runs, next_cursor = client.runs_page(
            all=all_runs, limit=limit, cursor=cursor, status=status, prefix=prefix
        )
        scheduled = [] if as_json or cursor else client.schedules()
    finally:
        client.close()
    more = _next_page_command(next_cursor, limit=limit, status=status, prefix=prefix)
    if as_json:
        sys.stdout.write(json.dumps(runs, indent=2) + "\n")
        if more:
            err.print(more, highlight=False)
        return
    # Run names are never cut (a user types them next); the reason folds first.
    table = Table()
    table.add_column("NAME", no_wrap=True, min_width=max([4, *(len(r["name"]) for r in runs)]))
    table.add_column("TYPE")
    # The status (with a dev environment's idle stop) is read next; it folds, never cut.
    table.add_column("STATUS", overflow="fold")
    for header in ("NODES", "GPUS", "REASON", "SUBMITTED"):
        table.add_column(header)
    for run in runs:
        # Replicas a service's scaling retired hold nothing any more.
        jobs = [j for j in run["jobs"] if not j.get("retired")]
        table.add_row(
            run["name"],
            run["type"],
            _status_cell(run),
            ",".join(sorted({j["node"] for j in jobs if j["node"]})) or "-",
            str(sum(j["gpus"] for j in jobs)),
            run["reason"] or "",
            ago(run["submitted_at"]),
        )
    out.print(table)
    print_schedules(scheduled)  # each with its next start
    if more:
        out.print(more, highlight=False)


def _status_cell(run: dict[str, Any]) -> str:
    idle = run.get("idle_stop_in_s")
    if run["type"] == "service" and run["status"] == "running":
        # A replica gets requests only once ready (its probe passes; no probe: running).
        running = [j for j in run["jobs"] if j["status"] == "running"]
        ready = sum(j.get("ready") is not False for j in running)
        return f"running, {ready}/{len(running)} ready"
    if idle is None:
        return str(run["status"])
    return f"{run['status']}, idle stop in {_duration(idle)}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return (
        f"{minutes // 60}h{minutes % 60:02d}m"
        if minutes >= 60
        else f"{minutes}m{int(seconds) % 60:02d}s"
    )


def _next_page_command(
    cursor: str | None, *, limit: int, status: str | None, prefix: str | None
) -> str:
    if not cursor:
        return ""
    args = ["berth", "ps", "-a", "--cursor", cursor, "--limit", str(limit)]
    args += ["--status", status] if status else []
    args += ["--prefix", prefix] if prefix else []
    return f"more: {shlex.join(args)}"


def logs(
    run: Annotated[str, typer.Argument(help="Run name.")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep streaming until the run ends.")
    ] = False,
    job: Annotated[int, typer.Option(help="Node rank of a multi-node task.")] = 0,
    replica: Annotated[int, typer.Option(help="Replica of a service.")] = 0,
    attempt: Annotated[
        int | None,
        typer.Option(help="Which attempt of a retried job (1 is the first); default the last."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only lines since a time (2026-12-04T07:00:00Z) or for a while (10m)."),
    ] = None,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
    timestamps: Annotated[
        bool, typer.Option("-t", "--timestamps", help="Prefix each line with its time.")
    ] = False,
    events: Annotated[
        bool,
        typer.Option("--events", help="Berth's and Kubernetes' events of the run instead."),
    ] = False,
) -> None:
    """Print a run's output, kept by Berth after its pods are gone."""
    client = _client()
    try:
        if events:
            _print_events(client.events(run, kubernetes=True))
            return
        answer: dict[str, str] = {}
        chunks = client.logs(
            run,
            follow=follow,
            job=job,
            replica=replica,
            attempt=attempt,
            since=since,
            tail=tail,
            timestamps=timestamps,
            headers=answer,
        )
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        attempts = int(answer.get("x-berth-attempts", "0"))
        if attempt is None and attempts > 1:
            err.print(
                f"[dim]job {job} had {attempts} attempts; this was the last"
                f" (berth logs {run} --attempt 1 for the first)[/dim]"
            )
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _print_events(events: list[dict[str, Any]]) -> None:
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        job = f" job {e['job']}" if e.get("job") is not None else ""
        out.print(f"{when} {e['source']:<10} {e['kind']}{job}: {e['message']}", markup=False)


def stop(
    run: Annotated[str, typer.Argument(help="Run name.")],
    abort: Annotated[bool, typer.Option("--abort", help="Skip graceful termination.")] = False,
) -> None:
    """Stop a run (gracefully, or at once with --abort)."""
    client = _client()
    try:
        result = client.stop(run, abort=abort)
    finally:
        client.close()
    out.print(f"{result['name']}: {result['status']}")


def delete(run: Annotated[str, typer.Argument(help="Run name.")]) -> None:
    """Delete a finished run and what it left in the cluster."""
    client = _client()
    try:
        client.delete(run)
    finally:
        client.close()
    out.print(f"deleted {run}")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the server's health: Redis and the SSH jump hosts of your projects."""
    client = _client()
    try:
        found = client.status()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    out.print(f"redis: {found['redis']}")
    for backend in found.get("backends") or []:
        cluster = backend.get("cluster") or "default"
        where = "" if cluster == "default" else f"cluster {cluster}, "
        out.print(
            f"backend of {backend['project']} ({where}namespace {backend['namespace']}):"
            f" {backend['mode']} mode: {backend['reason']}"
        )
        if backend.get("unreachable"):
            out.print(f"  [red]its apiserver does not answer: {backend['unreachable']}[/red]")
    if not found["jump_hosts"]:
        out.print("no jump host (set proxy_jump in the server config to reach runs over SSH)")
        return
    table = Table("PROJECTS", "JUMP HOST", "ADDRESS", "STATUS", "CHECKED", "LATENCY", "REASON")
    for host in found["jump_hosts"]:
        checked = host["checked_at"]
        latency = host["latency_ms"]
        table.add_row(
            ",".join(host["projects"]),
            f"{host['namespace']}/{host['name']}",
            f"{host['hostname']}:{host['port']}",
            host["status"],
            ago(checked) if checked else "-",
            f"{latency:.0f} ms" if latency is not None else "-",
            host["reason"],
        )
    out.print(table)


@fleet_app.command("apply")
def fleet_apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Fleet configuration file.")],
) -> None:
    """Create or update a fleet."""
    client = _client()
    try:
        fleet = client.apply_fleet(file.read_text())
    finally:
        client.close()
    _print_fleets([fleet])


@fleet_app.command("list")
def fleet_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List fleets, their nodes, GPUs and what runs on them."""
    client = _client()
    try:
        fleets = client.fleets()
    finally:
        client.close()
    if as_json:
        sys.stdout.write(json.dumps(fleets, indent=2) + "\n")
        return
    _print_fleets(fleets)


def _print_fleets(fleets: list[dict[str, Any]]) -> None:
    # Fleet and node names are never cut; the other columns fold first.
    table = Table()
    nodes = [i["node"] for f in fleets for i in f["instances"] or []]
    table.add_column("FLEET", no_wrap=True, min_width=max([5, *(len(f["name"]) for f in fleets)]))
    table.add_column("INSTANCE", no_wrap=True, min_width=max([8, *(len(n) for n in nodes)]))
    for header in ("BACKEND", "GPU", "PRICE", "STATUS", "CREATED"):
        table.add_column(header)
    for fleet in fleets:
        instances = fleet["instances"] or [None]
        for i, inst in enumerate(instances):
            table.add_row(
                fleet["name"] if i == 0 else "",
                inst["node"] if inst else "-",
                inst["backend"] if inst else "-",
                inst["gpu"] if inst else "-",
                inst["price"] if inst else "-",
                inst["status"] if inst else "no nodes",
                ago(fleet["created_at"]) if i == 0 else "",
            )
    out.print(table)


@fleet_app.command("delete")
def fleet_delete(name: Annotated[str, typer.Argument(help="Fleet name.")]) -> None:
    """Delete a fleet (its nodes stay; runs may use them again)."""
    client = _client()
    try:
        client.delete_fleet(name)
    finally:
        client.close()
    out.print(f"deleted fleet {name}")


def follow_run(client: BerthClient, name: str, *, until_running: bool = False) -> dict[str, Any]:
    """Print events as they come, then the logs, until the run ends (or, with
    ``until_running``, until it runs); the run as last seen.

    While it waits, its queue position and reason are shown each time they
    change. Ctrl-C detaches without stopping the run.
    """
    after = "-"
    printed = 0  # bytes of job 0's output already shown
    waiting = ""
    try:
        while True:
            for event in client.events(name, after=after):
                after = event["id"]
                stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
                err.print(f"[dim]{stamp}[/dim] {event['message']}")
            run = client.run(name)
            if run["status"] in FINISHED:
                break
            if until_running and run["status"] == "running":
                return run
            if run["status"] == "running":
                printed = _print_new_output(client.logs(name, follow=True), printed)
                # The stream ends with the container, a moment before the run says so;
                # each new stream starts from the first byte, so only the rest is shown.
                time.sleep(_FOLLOW_POLL_S)
                continue
            if run["status"] == "pending" and run["reason"] and run["reason"] != waiting:
                waiting = run["reason"]
                err.print(f"[yellow]waiting[/yellow]: {waiting}")
            time.sleep(_FOLLOW_POLL_S)
        out.print(f"{name}: {run['status']}" + (f" ({run['reason']})" if run["reason"] else ""))
        return run
    except KeyboardInterrupt:
        err.print(f"\ndetached; {name} keeps running (berth logs -f {name}, berth stop {name})")
        return client.run(name)


def _print_new_output(chunks: Iterator[bytes], printed: int) -> int:
    """Write what lies past the first ``printed`` bytes of a log; the new total."""
    seen = 0
    for chunk in chunks:
        start = max(0, printed - seen)
        seen += len(chunk)
        if start < len(chunk):
            sys.stdout.buffer.write(chunk[start:])
            sys.stdout.flush()
    return max(printed, seen)
