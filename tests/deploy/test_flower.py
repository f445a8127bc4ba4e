"""Flower against a real worker and Redis: tasks by name, ids-only arguments, basic auth.

``berth worker`` and ``berth flower`` run as processes on the local cluster's
Redis under a key prefix of their own; tasks are sent by name as the API sends
them. The tasks page is then loaded in Debian's headless Chromium. The compose
file's and the manifests' healthcheck commands run against the same processes.
"""

from __future__ import annotations

import ast
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cli.local.cluster import ClusterState
from cli.local.processes import free_port
from shared import tasks
from shared.settings import RedisSettings, Settings
from tests.chromium import PNG_MAGIC, chromium
from tests.polling import wait_until
from tests.rbac import manifest
from tests.stack import BERTH

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = "berth"
WINDOW = (1280, 900)


@dataclass
class Flower:
    url: str
    password: str
    env: dict[str, str]
    settings: Settings
    directory: Path

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=auth or (USER, self.password), timeout=10)


@dataclass(frozen=True)
class SentTask:
    uuid: str
    job_id: str
    record: dict[str, Any]


@pytest.fixture(scope="module")
def flower(
    local_cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flower]:
    directory = tmp_path_factory.mktemp("flower")
    home = directory / "home"
    (home / "server").mkdir(parents=True)
    # The worker builds its context from this on the first task.
    backend = {"type": "kubernetes", "kubeconfig": {"filename": local_cluster.kubeconfig}}
    (home / "server" / "config.yml").write_text(
        yaml.safe_dump({"projects": [{"name": "main", "backends": [backend]}]})
    )
    prefix = f"flower{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env |= {
        "BERTH_HOME": str(home),
        "BERTH_REDIS__URL": local_cluster.redis_url,
        "BERTH_REDIS__KEY_PREFIX": prefix,
        "BERTH_FLOWER__BASIC_AUTH": f"{USER}:{password}",
        "HOSTNAME": socket.gethostname(),  # what a container's shell has; healthchecks use it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    rig = Flower(
        url=f"http://127.0.0.1:{port}",
        password=password,
        env=env,
        settings=Settings(
            home=home, redis=RedisSettings(url=local_cluster.redis_url, key_prefix=prefix)
        ),
        directory=directory,
    )
    processes = [
        _start("worker", [BERTH, "worker", "--concurrency", "2"], env, directory),
        _start("flower", [BERTH, "flower", "--port", str(port)], env, directory),
    ]
    try:
        wait_until(lambda: _healthy(rig, processes), timeout=60, what="Flower")
        # Flower has the worker's heartbeat: its event receiver is connected, so no task
        # event sent from now on is missed.
        wait_until(lambda: _knows_a_worker(rig), timeout=60, what="Flower to see the worker")
        yield rig
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="module")
def sent_task(flower: Flower) -> SentTask:
    """A sync_job task for a job that does not exist: the worker runs it and finds nothing."""
    job_id = f"j{secrets.token_hex(6)}"
    app = tasks.create_celery(flower.settings)
    try:
        tasks.send(app, tasks.SYNC_JOB, job_id)
    finally:
        app.close()
    record = wait_until(
        lambda: _task_with_args(flower, tasks.SYNC_JOB, job_id), timeout=30, what="the task"
    )
    return SentTask(uuid=record["uuid"], job_id=job_id, record=record)


def test_flower_shows_the_task_by_its_stable_name_with_ids_only_as_arguments(
    sent_task: SentTask,
) -> None:
    task = sent_task.record
    assert task["name"] == "berth.provisioning.sync_job"
    assert ast.literal_eval(task["args"]) == [sent_task.job_id]
    assert ast.literal_eval(task["kwargs"]) == {}
    assert task["state"] == "SUCCESS"
    assert task["worker"].startswith("worker@")


def test_flower_shows_a_periodic_sweep_with_no_arguments(flower: Flower) -> None:
    app = tasks.create_celery(flower.settings)
    try:
        tasks.send(app, tasks.SWEEP)
    finally:
        app.close()
    sweep = wait_until(
        lambda: _task_with_args(flower, tasks.SWEEP, None), timeout=30, what="the sweep"
    )
    assert ast.literal_eval(sweep["args"]) == ()


def test_flower_refuses_requests_without_the_password(flower: Flower) -> None:
    assert httpx.get(f"{flower.url}/api/tasks", timeout=10).status_code == 401
    assert flower.get("/api/tasks", auth=(USER, "wrong")).status_code == 401
    assert flower.get("/tasks", auth=("intruder", flower.password)).status_code == 401
    assert flower.get("/api/tasks").status_code == 200
    # Only the probes' page is open.
    assert httpx.get(f"{flower.url}/healthcheck", timeout=10).text == "OK"


def test_the_tasks_page_in_headless_chromium_lists_the_task(
    flower: Flower, sent_task: SentTask, tmp_path: Path
) -> None:
    page = f"http://{USER}:{flower.password}@{flower.url.removeprefix('http://')}/tasks"
    dom = chromium(tmp_path, "--dump-dom", page).decode()
    assert f'<tr id="{sent_task.uuid}"' in dom, dom[-2000:]
    assert ">berth.provisioning.sync_job</a>" in dom
    screenshot = tmp_path / "flower-tasks.png"
    chromium(tmp_path, f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page)
    png = screenshot.read_bytes()
    assert png.startswith(PNG_MAGIC)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == WINDOW
    assert len(png) > 10_000  # a blank page compresses to a few hundred bytes


def test_the_worker_healthcheck_of_compose_and_kubernetes_answers_for_a_live_worker(
    flower: Flower,
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kind, compose_check = compose["services"]["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    [container] = manifest("Deployment", "berth-worker")["spec"]["template"]["spec"]["containers"]
    shell, dash_c, k8s_check = container["livenessProbe"]["exec"]["command"]
    assert (shell, dash_c) == ("sh", "-c")
    # Compose escapes "$" as "$$"; the container's shell then sees "$HOSTNAME".
    for check in (compose_check.replace("$$", "$"), k8s_check):
        assert _sh(check, flower.env).returncode == 0, check
    # And it is this worker that answers: another host name gets no reply.
    elsewhere = flower.env | {"HOSTNAME": "not-this-host"}
    assert _sh(k8s_check.replace("--timeout 10", "--timeout 1"), elsewhere).returncode != 0


def test_the_flower_healthcheck_of_compose_answers(flower: Flower) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cmd, python, dash_c, code = compose["services"]["flower"]["healthcheck"]["test"]
    assert (cmd, python, dash_c) == ("CMD", "python", "-c")
    port = flower.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-c", code.replace(":5555/", f":{port}/")], timeout=30, check=False
    )
    assert result.returncode == 0


def _start(
    name: str, argv: list[str], env: dict[str, str], directory: Path
) -> subprocess.Popen[bytes]:
    with open(directory / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _healthy(rig: Flower, processes: list[subprocess.Popen[bytes]]) -> bool:
    for process in processes:
        if process.poll() is not None:
            logs = "\n".join(p.read_text() for p in rig.directory.glob("*.log"))
            raise AssertionError(f"{process.args!r} exited with {process.returncode}:\n{logs}")
    try:
        return httpx.get(f"{rig.url}/healthcheck", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _knows_a_worker(rig: Flower) -> bool:
    workers = rig.get("/workers?json=1").json()["data"]
    return any(w["hostname"].startswith("worker@") and w["status"] for w in workers)


def _task_with_args(flower: Flower, name: str, job_id: str | None) -> dict[str, Any] | None:
    found = flower.get(f"/api/tasks?taskname={name}").json()
    for task in found.values():
        if task["state"] == "SUCCESS" and (job_id is None or job_id in task["args"]):
            return dict(task)
    return None


def _sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", command], env=env, capture_output=True, timeout=60, check=False
    )
