"""``berth attach RUN``: plain ``ssh RUN`` (and VS Code Remote-SSH) through the jump host.

It writes two files under ``$BERTH_HOME/ssh/`` and rewrites them on every attach:

* ``RUN.config``: a ``Host`` block for the jump host and one per node, each
  with ``ProxyJump``, the user's identity file, ``HostKeyAlias`` and
  ``StrictHostKeyChecking yes``;
* ``RUN.known_hosts``: the host keys Berth generated for the jump host and the
  run's pods, under those aliases. Keys are pinned from what the server says,
  never accepted on first sight, and an alias per run keeps a reused pod IP
  from clashing with an old entry.

``~/.ssh/config`` gets ``Include <BERTH_HOME>/ssh/*.config`` once, at its top
(an ``Include`` further down would belong to the ``Host`` block above it),
and only with the user's consent (``-y`` gives it up front).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from cli.client import BerthClient, load_client_config
from cli.console import out
from cli.keys import berth_key_path, ensure_registered_key
from shared.errors import BerthError, ConfigError
from shared.settings import load_settings

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # what may appear bare in ssh_config


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer server may add fields


class Jump(_Wire):
    hostname: str
    port: int
    user: str
    host_key: str
    status: str = ""
    reason: str = ""


class Node(_Wire):
    names: list[str]
    pod_ip: str
    port: int
    user: str
    host_key: str | None
    replica_num: int = 0
    job_num: int = 0


class PortMap(_Wire):
    local_port: int | None
    container_port: int


class SshAccess(_Wire):
    project: str
    run: str
    jump: Jump
    nodes: list[Node]
    ports: list[PortMap] = []


def attach(
    run: Annotated[str, typer.Argument(help="Run name.")],
    identity: Annotated[
        Path | None,
        typer.Option(
            "-i",
            "--identity",
            help="Your private key (its public half is on file). Default: the local key that "
            "matches the one on file; one is made in ~/.berth/ssh/ and registered if none is.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("-y", "--yes", help="Add the Include to ~/.ssh/config without asking.")
    ] = False,
    detach: Annotated[
        bool,
        typer.Option("-d", "--detach", help="Write the SSH config, print how to connect, return."),
    ] = False,
    forward: Annotated[bool, typer.Option("--forward", hidden=True)] = False,
) -> None:
    """Write an SSH config for RUN (ssh RUN, ssh RUN-0, ...) with host keys pinned, print the
    IDE link of a dev environment, and stay attached, forwarding the run's ports, until Ctrl-C."""
    del forward  # the default since attach stays attached; kept so older scripts still run
    settings = load_settings()
    client = BerthClient(load_client_config(settings.home))
    try:
        session = open_session(client, run, home=settings.home, identity=identity, yes=yes)
        out.print(f"wrote {session.config}")
        print_how_to_open(session)
        if detach:
            return
        code = stay_attached(client, session)
    finally:
        client.close()
    raise typer.Exit(code)


@dataclass(frozen=True)
class Session:
    """A run made reachable over SSH from this machine: its files written, keys pinned."""

    run: dict[str, Any]
    access: SshAccess
    config: Path
    included: bool
    """Whether ~/.ssh/config includes Berth's files, so plain ``ssh RUN`` works."""


def open_session(
    client: BerthClient, run: str, *, home: Path, identity: Path | None, yes: bool
) -> Session:
    """Fetch the run's SSH details, write the config and pinned keys, report problems."""
    key = _identity(client, home, identity)
    access = ssh_access(client, run)
    config = write_ssh_files(access, home / "ssh", identity=key)
    included = ensure_include(
        Path.home() / ".ssh" / "config",
        config.parent / "*.config",
        confirm=(lambda _q: True) if yes else (lambda q: typer.confirm(q, default=True)),
    )
    if access.jump.status != "ok":
        out.print(f"[yellow]the jump host is {access.jump.status}: {access.jump.reason}[/yellow]")
    for node in access.nodes:
        if node.host_key is None:
            names = ", ".join(node.names)
            out.print(f"[yellow]{names}: the pod has no host key to pin; no entry written[/yellow]")
    return Session(run=client.run(run), access=access, config=config, included=included)


def stay_attached(client: BerthClient, session: Session) -> int:
    """Forward the run's ports (if any) until Ctrl-C or the run ends; never stops the run."""
    name = session.access.run
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill detaches like Ctrl-C
    if session.access.ports:
        code = forward_ports(session.access, session.config)
    else:
        out.print("attached; press Ctrl-C to detach (the run keeps running)")
        try:
            while (status := client.run(name)["status"]) not in _FINISHED:
                time.sleep(_WATCH_S)
        except KeyboardInterrupt:
            code = 0
        else:
            out.print(f"{name}: {status}")
            return 0
    out.print(f"detached; {name} keeps running (berth attach {name}, berth stop {name})")
    return code


def print_how_to_open(session: Session) -> None:
    """The lines a dstack user expects: the IDE link (dev environments) and the SSH command."""
    run = session.run
    host = session.access.nodes[0].names[0]
    if run.get("ide_url"):
        ide = str((run.get("configuration") or {}).get("ide") or "vscode")
        out.print(f"To open in {_IDE_NAMES.get(ide, ide)}, use this link:")
        # Plain text, unwrapped: terminals make it clickable only if it is one piece.
        out.print(f"  {run['ide_url']}", soft_wrap=True, highlight=False, markup=False)
    ssh = f"ssh {host}" if session.included else f"ssh -F {session.config} {host}"
    out.print(f"To connect via SSH, use: {ssh}", soft_wrap=True, highlight=False, markup=False)


_IDE_NAMES = {"vscode": "VS Code Desktop", "cursor": "Cursor", "windsurf": "Windsurf"}
_FINISHED = frozenset({"done", "failed", "terminated"})
_WATCH_S = 5.0  # how often an attached CLI with nothing to forward checks the run


def ssh_access(client: BerthClient, run: str) -> SshAccess:
    try:
        return SshAccess.model_validate(client.ssh_access(run))
    except ValidationError as e:
        raise BerthError(f"the server's SSH details do not parse: {e}") from e


def _identity(client: BerthClient, home: Path, identity: Path | None) -> Path:
    if identity is not None:
        key = identity.expanduser().resolve()
        if not key.is_file():
            raise ConfigError(f"no private key at {key}", field="identity")
        return key
    found = ensure_registered_key(client, home)
    if found is None:
        raise ConfigError(
            "the SSH key on file for you matches no private key here"
            f" ({berth_key_path(home)}, ~/.ssh/id_ed25519, ...): pass --identity",
            field="identity",
        )
    return found


def write_ssh_files(access: SshAccess, directory: Path, *, identity: Path) -> Path:
    """Write ``RUN.config`` and ``RUN.known_hosts``; return the config's path."""
    for name in [access.run, *(n for node in access.nodes for n in node.names)]:
        if _SAFE_NAME.fullmatch(name) is None:
            raise BerthError(f"the server sent an unusable host name {name!r}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    known_hosts = directory / f"{access.run}.known_hosts"
    config = directory / f"{access.run}.config"
    _write(known_hosts, render_known_hosts(access))
    _write(config, render_config(access, identity=identity, known_hosts=known_hosts))
    return config


def render_config(access: SshAccess, *, identity: Path, known_hosts: Path) -> str:
    jump = f"berth-jump-{access.run}"
    common = [
        f"IdentityFile {_quote(identity)}",
        "IdentitiesOnly yes",  # not every key in the agent: sshd gives up after six tries
        f"UserKnownHostsFile {_quote(known_hosts)}",
        "StrictHostKeyChecking yes",
        "UpdateHostKeys no",  # the known_hosts file is Berth's; ssh must not add to it
        # Fail in seconds, not the kernel's two minutes, while a jump pod is recreated.
        "ConnectTimeout 15",
    ]
    lines = [
        f"# Written by 'berth attach {access.run}' (project {access.project});"
        " rewritten on every attach.",
        f"Host {jump}",
        f"    HostName {access.jump.hostname}",
        f"    Port {access.jump.port}",
        f"    User {access.jump.user}",
        f"    HostKeyAlias {_jump_alias(access)}",
        "    ForwardAgent no",
        *(f"    {line}" for line in common),
        "",
    ]
    for node in access.nodes:
        if node.host_key is None:
            continue  # no pinned key, no entry: never StrictHostKeyChecking no
        lines += [
            f"Host {' '.join(node.names)}",
            f"    HostName {node.pod_ip}",
            f"    Port {node.port}",
            f"    User {node.user}",
            f"    ProxyJump {jump}",
            f"    HostKeyAlias {_node_alias(access, node)}",
            "    ServerAliveInterval 15",  # notice a vanished pod in under a minute
            *(f"    {line}" for line in common),
            "",
        ]
    return "\n".join(lines)


def render_known_hosts(access: SshAccess) -> str:
    rows = [f"{_jump_alias(access)} {_key(access.jump.host_key)}"]
    rows += [
        f"{_node_alias(access, node)} {_key(node.host_key)}"
        for node in access.nodes
        if node.host_key is not None
    ]
    return "\n".join(rows) + "\n"


def ensure_include(ssh_config: Path, pattern: Path, *, confirm: Callable[[str], bool]) -> bool:
    """Put ``Include <pattern>`` at the top of ``ssh_config`` once; False if declined."""
    line = f"Include {_quote(pattern)}"
    text = ssh_config.read_text() if ssh_config.exists() else ""
    if any(existing.strip() == line for existing in text.splitlines()):
        return True
    if not confirm(f"Add '{line}' at the top of {ssh_config}, so 'ssh RUN' works?"):
        return False
    ssh_config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Through a symlink (dotfile managers keep ~/.ssh/config elsewhere), not over it.
    _write(ssh_config.resolve(), f"{line}\n\n{text}" if text else f"{line}\n")
    return True


def forward_ports(access: SshAccess, config: Path) -> int:
    """Run ``ssh -N -L ...`` for every port of the run until Ctrl-C; its exit code."""
    if not access.ports:
        out.print("the run has no ports to forward")
        return 0
    ssh_bin = shutil.which("ssh")
    if ssh_bin is None:
        raise ConfigError("no 'ssh' on PATH: install the OpenSSH client", field="forward")
    argv = [ssh_bin, "-F", str(config), "-N", "-o", "ExitOnForwardFailure=yes"]
    for port in access.ports:
        local = port.local_port or port.container_port
        argv += ["-L", f"127.0.0.1:{local}:localhost:{port.container_port}"]
        out.print(f"forwarding localhost:{local} -> {access.run}:{port.container_port}")
    argv.append(access.nodes[0].names[0])
    out.print("press Ctrl-C to stop forwarding and detach (the run keeps running)")
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill must not orphan the ssh child
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _jump_alias(access: SshAccess) -> str:
    return f"berth-jump.{access.project}.{access.jump.hostname}.{access.jump.port}"


def _node_alias(access: SshAccess, node: Node) -> str:
    return f"berth.{access.project}.{access.run}.{node.replica_num}.{node.job_num}"


def _key(text: str | None) -> str:
    parts = (text or "").split()
    if len(parts) < 2:
        raise BerthError(f"the server sent an unusable host key {text!r}")
    return f"{parts[0]} {parts[1]}"


def _quote(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: ssh never reads half a file
