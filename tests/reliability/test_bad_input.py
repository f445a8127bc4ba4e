"""Bad input against the running API: generated requests and hostile ones.

Each hostile input gets a clear 4xx that names the problem, and nothing is
stored: the project's run list and Redis's run keys are the same afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared import kube
from tests.polling import wait_until
from tests.reliability.fuzz import fuzz_api
from tests.reliability.world import World
from workers.podspec import DEFAULT_SHELL

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 8  # ~200 cases in CI; bench.faults sends over 1,000

BILLION_LAUGHS = """\
type: task
commands: [echo]
resources:
  gpu: [&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a],
        &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c],
        &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e],
        &g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]
"""


def test_generated_requests_get_no_server_error_and_match_the_schema(calm_world: World) -> None:
    figures = fuzz_api(
        calm_world.stack.url, calm_world.stack.admin_token, examples=EXAMPLES_PER_OPERATION
    )
    assert figures.operations >= 15
    assert figures.cases >= figures.operations * 2
    assert figures.failures == [], "\n".join(figures.failures)


def _run_keys(world: World) -> set[bytes]:
    return set(world.ctx.store.r.scan_iter(world.ctx.store.key("run", "*"), count=1000))


def _refused(world: World, body: Any, *, field: str | None, status: int = 422) -> dict[str, Any]:
    before = _run_keys(world)
    with world.stack.client() as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = http.post(
            "/api/projects/main/runs",
            content=content,
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["message"]
    if field is not None:  # a union may add its member's tag: configuration.str
        assert (error["field"] or "").split(".str")[0] == field, error
    assert _run_keys(world) == before, "a refused run left records behind"
    return error


def _conf(**fields: Any) -> dict[str, Any]:
    return {"configuration": {"type": "task", "commands": ["echo"], **fields}}


def test_a_yaml_bomb_is_refused_quickly(calm_world: World) -> None:
    error = _refused(calm_world, {"configuration": BILLION_LAUGHS}, field=None)
    assert "anchors and aliases expand" in error["message"]


def test_yaml_nested_without_end_is_refused(calm_world: World) -> None:
    text = "type: task\ncommands: " + "[" * 5000 + "]" * 5000
    error = _refused(calm_world, {"configuration": text}, field=None)
    assert "nested deeper" in error["message"]


def test_json_nested_without_end_is_refused(calm_world: World) -> None:
    body = b'{"configuration": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with calm_world.stack.client() as http:
        r = http.post(
            "/api/projects/main/runs", content=body, headers={"Content-Type": "application/json"}
        )
    assert 400 <= r.status_code < 500, r.text


def test_an_oversized_body_gets_413_whether_its_length_is_declared_or_not(
    calm_world: World,
) -> None:
    limit = calm_world.stack.settings().api.max_body_bytes
    big = json.dumps(_conf(env={"PAD": "x" * (limit + 10)})).encode()
    _refused(calm_world, big, field=None, status=413)

    def chunks() -> Any:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    with calm_world.stack.client() as http:
        r = http.post(
            "/api/projects/main/runs",
            content=chunks(),  # chunked: no Content-Length to judge by
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 413, r.text
    assert "max_body_bytes" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "name",
    [
        "Upper-Case",
        "under_score",
        "a" * 64,
        "-leading-hyphen",
        "dotted.name",
        "x;rm -rf /",
        "$(id)",
        "`id`",
        "a|b",
        "a\nb",
        "naïve",
        "名前",
        "emoji-🚀",
        "",
    ],
)
def test_a_name_that_is_not_a_valid_kubernetes_name_is_refused(
    calm_world: World, name: str
) -> None:
    _refused(calm_world, _conf(name=name), field="name")


@pytest.mark.parametrize(
    "env",
    [
        {"BAD-NAME": "x"},
        {"A\nB": "x"},
        {"1ABC": "x"},
        {"A;id": "x"},
        {"ÄÖ": "x"},
    ],
)
def test_an_invalid_env_name_is_refused(calm_world: World, env: dict[str, str]) -> None:
    _refused(calm_world, _conf(env=env), field="env")


def test_env_values_with_newlines_and_shell_text_reach_the_pod_verbatim_as_data(
    calm_world: World,
) -> None:
    """Values are data: no host-side shell ever sees them or the commands."""
    world = calm_world
    value = "line one\nline two; $(id) `id` \"quoted\" 'single' && rm -rf /"
    command = "echo $MULTI | grep 'line' > /dev/null; echo \"done\""
    body = _conf(name="hostile-env", env={"MULTI": value}, commands=[command])
    with world.stack.client() as http:
        r = http.post("/api/projects/main/runs", json=body)
    assert r.status_code == 202, r.text
    k = world.kube

    def pod() -> Any:
        items = k.call(
            k.core.list_namespaced_pod,
            world.namespace,
            label_selector=f"{kube.LABEL_RUN}=hostile-env",
        ).items
        return items[0] if items else None

    found = wait_until(pod, timeout=60, what="hostile-env's pod")
    container = found.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    assert env["MULTI"] == value  # verbatim, newline included
    shell, flag, script = container.command
    assert (shell, flag) == (DEFAULT_SHELL, "-c")
    # The user's command as written, its own line of the block PID 1 supervises.
    assert "\n{\n" + command + "\n} 8>&- 9>&- &\n" in script
    assert value not in script  # the value travels only in env
    with world.stack.client() as http:
        assert http.post("/api/projects/main/runs/hostile-env/stop", json={}).status_code == 200


def test_unknown_fields_and_wrong_types_are_refused_by_name(calm_world: World) -> None:
    _refused(calm_world, _conf(comands=["x"]), field="comands")
    _refused(calm_world, _conf(resources={"gpu": "A100:banana"}), field="resources.gpu")
    _refused(calm_world, {"configuration": 42}, field="configuration")
    _refused(calm_world, {"configuration": {"type": "task"}, "extra": 1}, field="extra")
    _refused(calm_world, b"not json", field=None)


def test_a_config_error_never_echoes_a_secret_value(calm_world: World) -> None:
    secret = "hunter2-never-echoed"
    for conf in (
        _conf(registry_auth=f"bot:{secret}"),
        _conf(registry_auth={"username": "bot", "password": [secret]}),
        _conf(env={"HF_TOKEN": [secret]}),
    ):
        error = _refused(calm_world, conf, field=None)
        assert secret not in json.dumps(error)


def test_the_api_answers_4xx_not_5xx_to_malformed_http(calm_world: World) -> None:
    url = calm_world.stack.url
    token = calm_world.stack.admin_token
    with httpx.Client(base_url=url, timeout=10) as http:
        for headers in (
            {"Authorization": "Bearer"},
            {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
            {"Authorization": "Bearer " + "x" * 10_000},
            {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        ):
            r = http.post("/api/projects/main/runs", content=b"{}", headers=headers)
            assert 400 <= r.status_code < 500, (headers, r.status_code, r.text)
