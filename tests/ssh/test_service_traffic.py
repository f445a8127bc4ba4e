"""What the proxy does with a service's requests before a replica sees them:
``strip_prefix``, ``rate_limits`` answered 429 per prefix and partition, and ``model``
served through dstack's OpenAI-compatible endpoint."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.polling import wait_until
from tests.ssh.world import SLOW, SshWorld

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("app.py"))
PORT = 8000
# Under 1/50 s the refill takes 50 s: no refill happens within a test on a slow machine.
NO_REFILL_RPS = 0.02


def _app(gate: Path) -> Any:
    def app(pod: Any, _directory: Path) -> list[str]:
        return [
            sys.executable, APP, "--bind", pod.status.pod_ip, "--port", str(PORT),
            "--name", pod.metadata.name, "--gate", str(gate),
        ]  # fmt: skip

    return app


@pytest.fixture(scope="module")
def services(
    ssh_world: SshWorld, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Run name -> its proxy URL, each running and answering."""
    gate = tmp_path_factory.mktemp("gate") / "open"
    configurations: list[dict[str, Any]] = [
        {"name": "stripped"},
        {"name": "whole", "strip_prefix": False},
        {
            "name": "limited",
            "rate_limits": [
                {"prefix": "/who", "rps": NO_REFILL_RPS, "burst": 2},
                {"prefix": "/", "rps": 1000, "burst": 1000},
                {
                    "prefix": "/per-user",
                    "rps": NO_REFILL_RPS,
                    "key": {"type": "header", "header": "X-User"},
                },
                {"prefix": "/refill", "rps": 5},
            ],
        },
        {"name": "chat", "model": {"name": "berth/tiny-chat", "prefix": "/openai/v1"}},
    ]
    urls = {}
    for extra in configurations:
        ssh_world.apps[extra["name"]] = _app(gate)
        conf = {"type": "service", "port": PORT, "auth": False, "commands": ["serve"], **extra}
        name = ssh_world.submit(conf)
        urls[name] = f"{ssh_world.stack.url}/proxy/services/main/{name}"
    for name, url in urls.items():
        ssh_world.running(name)
        # /path answers under any prefix and is limited by none but "/" (generous).
        wait_until(partial(_answers, f"{url}/x/path"), timeout=SLOW, what=f"{name} up")
    yield urls
    for name in urls:
        ssh_world.stop(name)
    # Pod IPs are reused: a later module's pod must not find these apps still listening.
    for name in urls:
        wait_until(
            partial(_gone, ssh_world, name), timeout=SLOW, what=f"{name}'s pods and apps gone"
        )


def test_a_service_gets_its_own_path_with_the_proxy_prefix_stripped(
    services: dict[str, str],
) -> None:
    assert _get(f"{services['stripped']}/x/path") == (200, "/x/path")


def test_strip_prefix_false_sends_the_service_the_whole_path(services: dict[str, str]) -> None:
    assert _get(f"{services['whole']}/x/path") == (200, "/proxy/services/main/whole/x/path")


def test_a_prefix_takes_its_rate_and_burst_then_answers_429_with_retry_after(
    services: dict[str, str],
) -> None:
    url = services["limited"]
    passed = [httpx.get(f"{url}/who", timeout=10).status_code for _ in range(3)]
    assert passed == [200, 200, 200]  # one at the rate, two more of burst
    refused = httpx.get(f"{url}/who", timeout=10)
    assert refused.status_code == 429
    assert "/who" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > 30  # the next slot is ~50 s away
    # The longest matching prefix decides: other paths count under "/", with room.
    assert _get(f"{url}/who-else/path")[0] == 429  # "/who" is a prefix of it too
    assert _get(f"{url}/x/path")[0] == 200


def test_a_header_key_limits_each_value_on_its_own(services: dict[str, str]) -> None:
    url = f"{services['limited']}/per-user/path"
    assert httpx.get(url, headers={"X-User": "ann"}, timeout=10).status_code == 200
    assert httpx.get(url, headers={"X-User": "ann"}, timeout=10).status_code == 429
    assert httpx.get(url, headers={"X-User": "bob"}, timeout=10).status_code == 200


def test_a_refused_partition_is_let_through_again_as_its_rate_refills(
    services: dict[str, str],
) -> None:
    url = f"{services['limited']}/refill/path"
    codes = [_get(url)[0] for _ in range(20)]  # 20 at once is over 5 rps without burst
    assert 429 in codes
    wait_until(lambda: _get(url)[0] == 200, timeout=SLOW, what="the refill letting one in")


def _gone(world: SshWorld, name: str) -> bool:
    with world.stack.client() as c:
        finished = c.get(f"/api/projects/main/runs/{name}").json()["status"] == "terminated"
    return finished and world.pods.process(f"berth-main-{name}-", "app") is None


def _answers(url: str) -> bool:
    return _get(url)[0] == 200


def _get(url: str, **kwargs: Any) -> tuple[int, str]:
    try:
        r = httpx.get(url, timeout=10, **kwargs)
    except httpx.HTTPError as e:
        return 0, str(e)
    return r.status_code, r.text


def test_the_project_lists_its_services_models_the_openai_way(
    ssh_world: SshWorld, services: dict[str, str]
) -> None:
    with ssh_world.stack.client() as c:
        r = c.get("/proxy/models/main/models")
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("berth/tiny-chat", "model", "main")
    ]


def test_a_chat_request_reaches_the_service_of_its_model_at_the_models_prefix(
    ssh_world: SshWorld, services: dict[str, str]
) -> None:
    body = {"model": "berth/tiny-chat", "messages": [{"role": "user", "content": "hi"}]}
    with ssh_world.stack.client() as c:
        r = c.post("/proxy/models/main/chat/completions", json=body)
        unknown = c.post("/proxy/models/main/chat/completions", json={**body, "model": "gpt"})
    assert r.status_code == 200, r.text
    assert r.headers["x-seen-path"] == "/openai/v1/chat/completions"
    assert r.json() == body  # passed on as sent: the service speaks OpenAI itself
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "model"
    assert (
        httpx.post(
            f"{ssh_world.stack.url}/proxy/models/main/chat/completions", json=body
        ).status_code
        == 401
    )
