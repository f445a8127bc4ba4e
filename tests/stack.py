"""Berth's whole stack as separate processes, for end-to-end tests and benches.

API server, Celery workers, the proxy worker and beat run as ``berth ...``
subprocesses against the real local cluster and Redis, each recorded by PID
and stopped by PID.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from cli.local.cluster import ClusterState
from cli.local.processes import (
    ProcessRecord,
    free_port,
    is_running,
    log_tail,
    start_process,
    stop_process,
)
from shared.settings import RedisSettings, Settings
from tests.polling import wait_until

BERTH = str(Path(sys.executable).parent / "berth")  # the venv's console script
SHARED_CLIENT_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64)
"""For a client shared by many threads (the benches send 32 requests at once): as many
connections kept as may be open. With httpx's default of 20 kept, httpcore 1.0.9's pool
closes "surplus idle" connections whenever more than 20 are open, and a connection just
handed to a thread that has not sent on it yet counts as idle: that thread then reads a
closed socket (``ReadError('[Errno 9] Bad file descriptor')``, seen twice in 10,000-run
submissions, the request never reaching the API)."""


@dataclass
class Stack:
    home: Path
    url: str
    admin_token: str
    namespace: str
    env: dict[str, str]
    processes: list[ProcessRecord] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)
    """Host name -> the names of the processes that "run on" it (``start_stack(hosts=...)``)."""

    def cli(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``berth ARGS`` as a user would, with this stack's home and token."""
        return subprocess.run(
            [BERTH, *args],
            env=self.env | (env or {}),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
            limits=SHARED_CLIENT_LIMITS,
        )

    def settings(self) -> Settings:
        """The settings Berth's processes run with, for in-process checks."""
        redis = RedisSettings(
            url=self.env["BERTH_REDIS__URL"], key_prefix=self.env["BERTH_REDIS__KEY_PREFIX"]
        )
        if self.env.get("BERTH_REDIS__SENTINELS"):  # a Sentinel group (tests/sentinel.py)
            redis = redis.model_copy(
                update={
                    "sentinels": json.loads(self.env["BERTH_REDIS__SENTINELS"]),
                    "master_name": self.env.get("BERTH_REDIS__MASTER_NAME", redis.master_name),
                    "min_replica_acks": int(self.env.get("BERTH_REDIS__MIN_REPLICA_ACKS", "0")),
                }
            )
        return Settings(home=self.home, redis=redis)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{log_tail(p, 40)}" for p in self.processes)

    def stop(self) -> None:
        for record in reversed(self.processes):
            stop_process(record)

    def restart(self, name: str) -> ProcessRecord:
        """Start process ``name`` again with its recorded argv and this stack's env.

        For fault tests: after a SIGKILL (or to replace a live one, which is stopped
        first, by PID). The new record takes the old one's place, so ``stop`` ends it.
        """
        index = next(i for i, p in enumerate(self.processes) if p.name == name)
        old = self.processes[index]
        stop_process(old)
        saved = dict(os.environ)
        os.environ.update(self.env)  # posix_spawn takes the caller's environment
        try:
            record = start_process(name, old.argv, log_dir=Path(old.log).parent)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.processes[index] = record
        return record


def start_stack(
    cluster: ClusterState,
    directory: Path,
    *,
    namespace: str,
    workers: int = 1,
    apis: int = 1,
    hosts: tuple[str, ...] = (),
    proxy_workers: int = 1,
    kubeconfig: Path | None = None,
    backend: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    extra_projects: dict[str, dict[str, Any]] | None = None,
    privileged_projects: tuple[str, ...] = (),
) -> Stack:
    """Write configs, start every Berth process, and wait until the API answers.

    ``kubeconfig`` is what Berth's processes use (default: the cluster admin's);
    the e2e suite passes one bound only to Berth's shipped RBAC. ``backend`` is
    merged into each project's backend, ``env`` into every process's environment.
    ``extra_projects``: more projects beside ``main`` and ``other``, each with its
    own changes on top of that backend (e.g. another namespace).
    ``privileged_projects``: projects whose runs may be privileged (``allow_privileged``).

    ``apis`` > 1: that many API processes (``api-0``, ``api-1``, ...) on one loopback
    address with ``SO_REUSEPORT`` (``api.reuse_port``), so no load balancer is needed.
    ``hosts``: Celery workers and proxy workers spread round-robin over these "hosts",
    each worker named ``w<i>@<host>`` (``Stack.hosts`` lists what runs on each; every
    process is a process group of its own, as ``start_process`` starts it).
    ``proxy_workers`` > 1: a leader and standbys (``proxy-worker-0``, ...).
    """
    home = directory / "home"
    home.mkdir(parents=True)
    server_config = home / "server" / "config.yml"
    server_config.parent.mkdir()
    server_config.write_text(
        yaml.safe_dump(
            {
                "projects": [
                    {
                        "name": project,
                        "backends": [
                            {
                                "type": "kubernetes",
                                "kubeconfig": {"filename": str(kubeconfig or cluster.kubeconfig)},
                                "namespace": namespace,
                                "proxy_jump": {"hostname": "127.0.0.1", "port": 32022},
                                "gpu_prices": {"H100": 2.5},
                            }
                            | (backend or {})
                            | (extra_projects or {}).get(project, {})
                        ],
                        "allow_privileged": project in privileged_projects,
                    }
                    for project in ("main", "other", *(extra_projects or {}))
                ]
            }
        )
    )
    port = free_port()
    token = secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "BERTH_HOME": str(home),
        "BERTH_REDIS__URL": cluster.redis_url,
        "BERTH_REDIS__KEY_PREFIX": f"e2e{secrets.token_hex(3)}",
        "BERTH_API__PORT": str(port),
        "BERTH_API__ADMIN_TOKEN": token,
        "BERTH_SECRETS__KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "BERTH_ENVIRONMENT": "development",
        **({"BERTH_API__REUSE_PORT": "true"} if apis > 1 else {}),
        **(env or {}),
    }
    stack = Stack(
        home=home, url=f"http://127.0.0.1:{port}", admin_token=token, namespace=namespace, env=env
    )
    (home / "config.yml").write_text(
        yaml.safe_dump({"url": stack.url, "token": token, "project": "main"})
    )
    logs = directory / "logs"
    commands = _numbered("api", ["server"], apis)
    proxies = _numbered("proxy-worker", ["proxy-worker"], proxy_workers)
    commands += [*proxies, ("log-collector", ["log-collector"]), ("beat", ["beat"])]
    for i in range(workers):
        host = hosts[i % len(hosts)] if hosts else "%h"  # %h: Celery's own, this machine's
        commands.append((f"worker-{i}", ["worker", "--name", f"w{i}@{host}"]))
        if hosts:
            stack.hosts.setdefault(host, []).append(f"worker-{i}")
    for i, (name, _) in enumerate(proxies if hosts else []):
        stack.hosts.setdefault(hosts[i % len(hosts)], []).append(name)
    spawn(stack, commands, logs)
    try:
        wait_until(lambda: _healthy(stack), timeout=60, what="the Berth API")
        wait_until(lambda: _workers_up(stack), timeout=60, what="Celery workers")
    except AssertionError:
        stack.stop()
        raise AssertionError(f"Berth did not start:\n{stack.logs()}") from None
    return stack


def _numbered(name: str, argv: list[str], n: int) -> list[tuple[str, list[str]]]:
    """One process called ``name``, or ``name-0`` ... ``name-<n-1>``."""
    return [(name, argv)] if n == 1 else [(f"{name}-{i}", argv) for i in range(n)]


def spawn(stack: Stack, commands: list[tuple[str, list[str]]], logs: Path) -> None:
    """Start ``berth ARGV`` for each (name, argv) with the stack's environment, recorded by PID."""
    old = dict(os.environ)
    os.environ.update(stack.env)  # posix_spawn takes the caller's environment
    try:
        for name, argv in commands:
            stack.processes.append(start_process(name, [BERTH, *argv], log_dir=logs))
    finally:
        os.environ.clear()
        os.environ.update(old)


def _healthy(stack: Stack) -> bool:
    for record in stack.processes:
        if not is_running(record):
            raise AssertionError(f"{record.name} exited:\n{log_tail(record, 60)}")
    apis = [p for p in stack.processes if p.name == "api" or p.name.startswith("api-")]
    # With several API processes the address answers once the first one listens.
    if not all("Application startup complete" in _log(p) for p in apis):
        return False
    try:
        return httpx.get(f"{stack.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _log(record: ProcessRecord) -> str:
    return Path(record.log).read_text(errors="replace")


def _workers_up(stack: Stack) -> bool:
    return all("ready." in _log(p) for p in stack.processes if p.name.startswith("worker"))
