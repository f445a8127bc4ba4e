"""``/proxy/services/...``: HTTP from the API through asyncssh tunnels to real replicas.

The replicas are ``tests/ssh/app.py`` on each pod's loopback IP. The API never
dials a pod IP itself; the jump host's sshd log shows the ``direct-tcpip``
channel it opened to the replica for each proxied connection.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.state.records import RunStatus
from tests.polling import wait_until
from tests.ssh.world import SLOW, SshWorld

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("app.py"))
PORT = 8000


@dataclass
class Service:
    name: str
    url: str
    replicas: dict[str, str]
    """Pod name -> pod IP."""
    gate: Path


@pytest.fixture(scope="module")
def service(ssh_world: SshWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    gate = tmp_path_factory.mktemp("gate") / "open"

    def app(pod: Any, _directory: Path) -> list[str]:
        return [
            sys.executable, APP, "--bind", pod.status.pod_ip, "--port", str(PORT),
            "--name", pod.metadata.name, "--gate", str(gate),
        ]  # fmt: skip

    ssh_world.apps["web"] = app
    name = ssh_world.submit(
        {"type": "service", "name": "web", "port": PORT, "replicas": 2, "commands": ["serve"]}
    )
    run = ssh_world.running(name)
    svc = Service(
        name=name,
        url=f"{ssh_world.stack.url}/proxy/services/main/{name}",
        replicas={j["pod_name"]: j["pod_ip"] for j in run["jobs"]},
        gate=gate,
    )
    with ssh_world.stack.client() as c:
        wait_until(
            lambda: c.get(f"{svc.url}/who").status_code == 200, timeout=SLOW, what="a replica up"
        )
    yield svc
    ssh_world.stop(name)


def test_a_request_reaches_a_replica_only_through_the_jump_host(
    ssh_world: SshWorld, service: Service
) -> None:
    with ssh_world.stack.client() as c:
        r = c.get(f"{service.url}/who")
    assert r.status_code == 200
    assert r.text in service.replicas
    jump = ssh_world.jump_sshd()
    assert jump is not None
    forwarded = Path(jump.log).read_text()
    assert f"target {service.replicas[r.text]} port {PORT}" in forwarded


def test_replicas_take_turns(ssh_world: SshWorld, service: Service) -> None:
    with ssh_world.stack.client() as c:
        # Both replicas' servers are up once each has answered a request.
        wait_until(
            lambda: {c.get(f"{service.url}/who").text for _ in range(2)} == set(service.replicas),
            timeout=SLOW,
            what="both replicas answering",
        )
        seen = [c.get(f"{service.url}/who").text for _ in range(6)]
    assert all(a != b for a, b in itertools.pairwise(seen)), seen


def test_a_streamed_response_arrives_before_the_replica_has_finished_it(
    ssh_world: SshWorld, service: Service
) -> None:
    with ssh_world.stack.client() as c, c.stream("GET", f"{service.url}/stream") as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines).startswith("first from ")
        # The replica holds its second chunk until the gate opens: it is still
        # writing this response, and the first chunk has already come through.
        service.gate.touch()
        try:
            assert list(lines) == ["second"]
        finally:
            service.gate.unlink()


def test_a_request_body_goes_through_and_the_berth_token_does_not(
    ssh_world: SshWorld, service: Service
) -> None:
    body = b"x" * 300_000  # several SSH window updates' worth
    with ssh_world.stack.client() as c:
        r = c.post(f"{service.url}/echo", content=body)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["x-seen-authorization"] == "no"
    assert r.headers["x-seen-prefix"] == f"/proxy/services/main/{service.name}"
    assert r.headers["x-seen-host"].endswith(f":{PORT}")


def test_an_auth_service_needs_a_project_members_token(
    ssh_world: SshWorld, service: Service
) -> None:
    assert httpx.get(f"{service.url}/who").status_code == 401
    with ssh_world.stack.client("not-a-token") as c:
        assert c.get(f"{service.url}/who").status_code == 401
    outsider = ssh_world.add_user("outsider", None, projects=("bad",))
    with ssh_world.stack.client(outsider) as c:
        assert c.get(f"{service.url}/who").status_code == 404


def test_an_anonymous_caller_cannot_tell_which_runs_and_projects_exist(
    ssh_world: SshWorld, service: Service
) -> None:
    base = f"{ssh_world.stack.url}/proxy/services"
    for url in (
        f"{service.url}/who",  # an auth service
        f"{base}/main/no-such-run/who",
        f"{base}/no-such-project/{service.name}/who",
    ):
        assert httpx.get(url).status_code == 401, url
    with ssh_world.stack.client() as member:
        assert member.get(f"{base}/main/no-such-run/who").status_code == 404
        assert member.get(f"{base}/no-such-project/{service.name}/who").status_code == 404


def test_a_replica_whose_job_leaves_running_gets_no_more_requests_at_once(
    ssh_world: SshWorld, service: Service
) -> None:
    with ssh_world.stack.client() as c, c.stream("GET", f"{service.url}/stream") as open_stream:
        lines = open_stream.iter_lines()
        leaving = next(lines).removeprefix("first from ")
        _leave_running(ssh_world, leaving)
        # No waiting: the very next requests go to the other replica only...
        seen = {c.get(f"{service.url}/who").text for _ in range(4)}
        assert seen == set(service.replicas) - {leaving}
        # ...and the connection still open to the one that left was closed.
        assert list(lines) == []


def _leave_running(world: SshWorld, pod_name: str) -> None:
    store = world.store
    run = store.run_by_name("main", "web")
    for _ in range(10):  # compare-and-set against the workers' own updates
        job = next(j for j in store.jobs_of(run) if j.pod_name == pod_name)
        assert job.status == RunStatus.RUNNING
        job.status = RunStatus.TERMINATING
        if store.save_job(job):
            return
    raise AssertionError("could not update the job")
