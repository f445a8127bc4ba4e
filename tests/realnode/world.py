"""Helpers of the real-node tier: submit through the API, wait on a run's status."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from cli.local.processes import is_running
from shared import kube
from shared.runlogs.store import AttemptMeta, LogStore
from shared.state.store import Store
from tests.polling import wait_until
from tests.stack import BERTH, Stack

# Pods really start here: image already present, containers in ~1-5 s on 2 cores,
# longer while other pods start. Generous, since a timeout is a failure, not a retry.
START_S = 90.0
# One CPU: dstack counts whole CPUs, and each real node has the host's two.
SMALL = "resources: {gpu: 1, cpu: 1.., memory: 0.1GB..}"


def apply(stack: Stack, tmp_path: Path, text: str) -> str:
    """``berth apply -f`` a configuration as a user would (detached); the run's name."""
    result = stack.cli("apply", "-f", str(write(tmp_path, text)), "-y", "-d")
    assert result.returncode == 0, result.stderr + result.stdout + stack.logs()
    return result.stdout.split("submitted ", 1)[1].split()[0]


def apply_and_follow(stack: Stack, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``berth apply -f`` that follows the run to its end, printing its output."""
    return stack.cli("apply", "-f", str(write(tmp_path, text)), "-y", timeout=2 * START_S)


def set_secret(stack: Stack, name: str, value: str) -> None:
    """``berth secret set NAME`` with the value on stdin, as a user keeps it off argv."""
    result = subprocess.run(
        [BERTH, "secret", "set", name],
        env=stack.env,
        input=value,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}.dstack.yml"
    path.write_text(textwrap.dedent(text))
    return path


def follow_logs(stack: Stack, name: str, *args: str) -> subprocess.Popen[str]:
    """``berth logs -f``: the run's output live, from its first line; ``communicate()``
    collects (stdout, stderr) once the output is complete."""
    return subprocess.Popen(
        [BERTH, "logs", "-f", name, *args],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(stack: Stack, name: str, *, project: str = "main") -> dict[str, Any]:
    with stack.client() as c:
        r = c.get(f"/api/projects/{project}/runs/{name}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def events(stack: Stack, name: str, *, project: str = "main") -> list[dict[str, Any]]:
    """The run's own events (Berth's, with their times), oldest first."""
    with stack.client() as c:
        r = c.get(f"/api/projects/{project}/runs/{name}/events")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


def wait_status(
    stack: Stack, name: str, *statuses: str, timeout: float = START_S, project: str = "main"
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        current = run(stack, name, project=project)
        return current if current["status"] in statuses else None

    try:
        return wait_until(check, timeout=timeout, what=f"{name} {'/'.join(statuses)}")
    except AssertionError as e:
        current = run(stack, name, project=project)
        raise AssertionError(f"{e}\nrun: {current}\n{stack.logs()}") from None


def running(stack: Stack, name: str, *, project: str = "main") -> dict[str, Any]:
    """The run once it and every job run with a pod IP."""

    def check() -> dict[str, Any] | None:
        current = run(stack, name, project=project)
        if current["status"] in ("failed", "done", "terminated"):
            raise AssertionError(f"{name} ended before running: {current}\n{stack.logs()}")
        jobs = current["jobs"]
        ok = current["status"] == "running" and jobs and all(j["pod_ip"] for j in jobs)
        return current if ok else None

    try:
        return wait_until(check, timeout=START_S, what=f"{name} running with pod IPs")
    except AssertionError as e:
        current = run(stack, name, project=project)
        raise AssertionError(f"{e}\nrun: {current}\n{stack.logs()}") from None


def logs(stack: Stack, name: str, *args: str) -> str:
    result = stack.cli("logs", name, *args, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def log_meta(stack: Stack, k: kube.Kube, name: str) -> AttemptMeta:
    """The log store's record of the run's first attempt (its job id is on its pod)."""
    pod_name = run(stack, name)["jobs"][0]["pod_name"]
    pod = k.call(k.core.read_namespaced_pod, pod_name, stack.namespace)
    settings = stack.settings()
    store = Store.connect(settings.redis.url, prefix=settings.redis.key_prefix, timeout_s=5)
    try:
        return LogStore(store, cap_bytes=1).meta(pod.metadata.labels[kube.LABEL_JOB], 1)
    finally:
        store.close()


def sigkill(stack: Stack, name: str) -> None:
    """SIGKILL the stack's process ``name`` (by its recorded PID) and wait until it is gone."""
    record = next(p for p in stack.processes if p.name == name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    wait_until(lambda: not is_running(record), timeout=10, what=f"{name} killed")


def stop(stack: Stack, name: str) -> None:
    stack.cli("stop", name, "--abort")
