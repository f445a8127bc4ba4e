"""Who may call what, how tokens are kept, and where secrets must never show up.

The auth matrix is generated from the app's own routes, so an endpoint added
later is tried too, or fails the test as unclassified until someone says who
may call it.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from api.app import create_app
from shared import kube
from tests.polling import wait_until
from tests.reliability.world import World

pytestmark = pytest.mark.integration

# Endpoints anyone may call: liveness and the scrape target (no data of any
# project), and the API's own description.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/redoc"),
    ("HEAD", "/openapi.json"),
}
# Not tied to a project: any valid user acts on their own account here (or, for
# the status, sees the jump hosts of their own projects only).
OWN_ACCOUNT = {
    ("PUT", "/api/users/me/ssh-key"),
    ("GET", "/api/users/me"),
    ("GET", "/api/status"),
}
# Not tied to a project: admins only (another user's token gets 403).
ADMIN_ONLY = {("POST", "/api/users")}
PROJECT_SCOPED = (
    "/api/projects/{project}/",
    "/proxy/services/{project}/",
    "/proxy/models/{project}/",
)
# The dashboard authenticates by a session cookie (a login with the token), not a bearer
# token: its own matrix is below (test_dashboard_*).
DASHBOARD = "/dashboard"
REGISTRY_PASSWORD = "registry-pa55-never-shown"


@pytest.fixture(scope="module")
def outsider(calm_world: World) -> str:
    """A user who is a member of project ``other`` only."""
    with calm_world.stack.client() as http:
        r = http.post("/api/users", json={"name": "outsider", "projects": ["other"]})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.fixture(scope="module")
def main_runs(calm_world: World) -> dict[str, str]:
    """A task and an authenticated service in project ``main``, and their ids."""
    out: dict[str, str] = {}
    with calm_world.stack.client() as http:
        for conf in (
            {"type": "task", "name": "sec-run", "commands": ["train"]},
            {"type": "service", "name": "sec-svc", "port": 8000, "commands": ["serve"]},
        ):
            r = http.post("/api/projects/main/runs", json={"configuration": conf})
            assert r.status_code == 202, r.text
            out[str(conf["name"])] = r.json()["id"]
    return out


def _routes(world: World) -> Iterator[tuple[str, str]]:
    app = create_app(world.stack.settings())  # routes only: the lifespan never runs
    # Included routers are nested; this flattens them into every (method, path).
    for route in iter_route_contexts(app.routes):
        for method in sorted(route.methods or ()):
            yield method, route.path or ""


def _url(path: str) -> str:
    values = {"project": "main", "name": "sec-run", "run": "sec-svc", "path": "x"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def _call(world: World, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = (
        {"configuration": {"type": "task", "commands": ["echo"]}}
        if method
        in (
            "POST",
            "PUT",
            "PATCH",
        )
        else None
    )
    with httpx.Client(base_url=world.stack.url, timeout=30) as http:
        return http.request(method, _url(path), headers=headers, json=body)


def test_every_endpoint_is_classified(calm_world: World) -> None:
    routes = list(_routes(calm_world))
    assert len(routes) >= 20
    for method, path in routes:
        known = (method, path) in PUBLIC | OWN_ACCOUNT | ADMIN_ONLY
        known = known or path.startswith(DASHBOARD)
        assert known or path.startswith(PROJECT_SCOPED), f"{method} {path}: who may call it?"


def test_auth_matrix_no_token_wrong_token_and_another_projects_token(
    calm_world: World, outsider: str, main_runs: dict[str, str]
) -> None:
    problems = []
    tried = 0
    for method, path in _routes(calm_world):
        if (method, path) in PUBLIC or path.startswith(DASHBOARD):
            continue
        tried += 1
        for who, token, allowed in (
            ("no token", None, {401}),
            ("wrong token", "not-a-berth-token", {401}),
            ("another project's token", outsider, {403, 404}),
        ):
            if (method, path) in OWN_ACCOUNT and who == "another project's token":
                allowed = set(range(200, 300)) | {422}  # their own account
            r = _call(calm_world, method, path, token)
            if r.status_code not in allowed:
                problems.append(f"{method} {path} with {who}: {r.status_code} {r.text[:200]}")
            # No answer of the matrix carries another project's data.
            assert not any(run_id in r.text for run_id in main_runs.values()), (method, path)
    assert tried >= 15
    assert problems == [], "\n".join(problems)


def test_dashboard_routes_without_a_session_or_with_another_projects_show_nothing_of_main(
    calm_world: World, outsider: str, main_runs: dict[str, str]
) -> None:
    url = calm_world.stack.url
    with httpx.Client(base_url=url, timeout=30) as http:
        login = http.post("/dashboard/login", data={"token": outsider})
        assert login.status_code == 303, login.text
    outsider_session = login.cookies["berth_session"]
    problems = []
    for method, path in _routes(calm_world):
        if not path.startswith(DASHBOARD) or method != "GET" or path.endswith("/stream"):
            continue
        for who, cookie, allowed in (
            ("no session", None, {200, 401, 404}),
            ("a forged session", "forged", {200, 401, 404}),
            ("another project's session", outsider_session, {200, 404}),
        ):
            cookies = {"berth_session": cookie} if cookie else {}
            r = httpx.get(f"{url}{_url(path)}", cookies=cookies, timeout=30)
            if r.status_code not in allowed:
                problems.append(f"GET {path} with {who}: {r.status_code} {r.text[:200]}")
            if (
                r.status_code == 200
                and "/static/" not in path
                and who != "another project's session"
            ):
                assert 'name="token"' in r.text, (path, who)  # the login page, nothing else
            for name, run_id in main_runs.items():
                assert run_id not in r.text and name not in r.text, (path, who)
    assert problems == [], "\n".join(problems)


def test_public_endpoints_answer_without_a_token_and_show_no_project_data(
    calm_world: World, main_runs: dict[str, str]
) -> None:
    for method, path in sorted(PUBLIC):
        if method != "GET":
            continue
        r = _call(calm_world, method, path, None)
        assert r.status_code == 200, (path, r.status_code)
        for run_id in main_runs.values():
            assert run_id not in r.text


def test_another_projects_data_never_appears(
    calm_world: World, outsider: str, main_runs: dict[str, str]
) -> None:
    with httpx.Client(
        base_url=calm_world.stack.url,
        headers={"Authorization": f"Bearer {outsider}"},
        timeout=30,
    ) as http:
        listing = http.get("/api/projects/other/runs", params={"all": True})
        assert listing.status_code == 200
        for name, run_id in main_runs.items():
            assert name not in listing.text and run_id not in listing.text
        # Projects the user is not in look exactly like projects that do not exist.
        hidden = http.get("/api/projects/main/runs")
        missing = http.get("/api/projects/no-such-project/runs")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["code"] == missing.json()["error"]["code"]


def _redis_dump(world: World) -> str:
    """Every key of this installation and every value, type by type, as text."""
    r = world.ctx.store.r
    parts = []
    for key in r.scan_iter(f"{world.ctx.store.p}:*", count=1000):
        parts.append(key.decode(errors="replace"))
        kind = r.type(key).decode()  # type: ignore[no-untyped-call]
        value: Any
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "zset":
            value = r.zrange(key, 0, -1)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "stream":
            value = r.xrange(key)
        else:
            value = ""
        parts.append(repr(value))
    return "\n".join(parts)


def test_tokens_are_stored_only_as_sha256(calm_world: World, outsider: str) -> None:
    dump = _redis_dump(calm_world)
    for token in (calm_world.stack.admin_token, outsider):
        assert token not in dump
    store = calm_world.ctx.store
    # The lookup is one GET of P:token:<sha256(token)>: no stored token is ever
    # compared with the presented one, so timing reveals nothing about it.
    from shared.state.store import token_sha256

    assert store.r.get(store.key("token", token_sha256(outsider))) == b"outsider"
    assert store.user_by_token(outsider) is not None
    assert store.user_by_token(outsider[:-1] + ("A" if outsider[-1] != "A" else "B")) is None


def test_only_admins_create_users(calm_world: World, outsider: str) -> None:
    with httpx.Client(base_url=calm_world.stack.url, timeout=30) as http:
        r = http.post(
            "/api/users",
            json={"name": "sneaky", "projects": ["main"]},
            headers={"Authorization": f"Bearer {outsider}"},
        )
    assert r.status_code == 403, r.text
    assert calm_world.ctx.store.get_user("sneaky") is None


def test_privileged_runs_need_the_projects_permission(calm_world: World) -> None:
    conf = {"type": "task", "name": "sec-priv", "commands": ["x"], "privileged": True}
    with calm_world.stack.client() as http:
        r = http.post("/api/projects/main/runs", json={"configuration": conf})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["field"] == "privileged"


class _TaskEvents:
    """What Flower shows: the ``task-received`` events workers publish, with args."""

    def __init__(self, world: World) -> None:
        self.events: list[dict[str, Any]] = []
        self._app = world.ctx.celery
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def __enter__(self) -> _TaskEvents:
        self._thread.start()
        wait_until(lambda: self._receiver is not None, timeout=10, what="event receiver")
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=10)

    def _capture(self) -> None:
        with self._app.connection_for_read() as conn:
            self._receiver = self._app.events.Receiver(
                conn, handlers={"task-received": self.events.append, "*": lambda _e: None}
            )
            self._receiver.capture(limit=None, timeout=None, wakeup=False)


def test_secrets_never_leak_into_responses_events_logs_task_args_or_metrics(
    calm_world: World, outsider: str
) -> None:
    world = calm_world
    conf = {
        "type": "task",
        "name": "sec-private",
        "image": "registry.example.com/team/trainer:1",
        "commands": ["train"],
        "registry_auth": {"username": "bot", "password": REGISTRY_PASSWORD},
        "env": {"KWOK_RUN_FOR": "1s"},
    }
    with _TaskEvents(world) as flower, world.stack.client() as http:
        created = http.post("/api/projects/main/runs", json={"configuration": conf})
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        wait_until(
            lambda: http.get("/api/projects/main/runs/sec-private").json()["status"] == "done",
            timeout=60,
            what="sec-private done",
        )
        wait_until(
            lambda: (
                any(run_id in str(e.get("args")) for e in flower.events)
                or any(
                    e.get("name", "").endswith(("provision_job", "provision_jobs"))
                    for e in flower.events
                )
            ),
            timeout=30,
            what="task events",
        )
        responses = [
            created.text,
            http.get("/api/projects/main/runs/sec-private").text,
            http.get("/api/projects/main/runs", params={"all": True}).text,
            http.get("/api/projects/main/runs/sec-private/events").text,
            http.get("/api/projects/main/runs/sec-private/logs").text,
            http.get("/metrics").text,
            http.get("/health").text,
            http.get("/openapi.json").text,
        ]
    k = world.kube
    pod_secret = k.call(
        k.core.list_namespaced_secret,
        world.namespace,
        label_selector=f"{kube.LABEL_RUN}=sec-private",
    ).items
    host_keys = [
        base64.b64decode(v).decode() for s in pod_secret for n, v in s.data.items() if "key" in n
    ]
    berth_key = (world.ctx.store.r.get(world.ctx.store.key("ssh", "berth-key")) or b"").decode()
    private_keys = [text for text in [berth_key, *host_keys] if "PRIVATE KEY" in text]
    assert private_keys, "expected Berth's SSH key and the pod's host key"
    secrets = [
        REGISTRY_PASSWORD,
        world.stack.admin_token,
        outsider,
        world.cluster.admin_token,  # the kubeconfig's credential
        *[_key_body(text) for text in private_keys],
    ]
    events = [str(e.get("args")) + str(e.get("kwargs")) for e in flower.events]
    assert events, "no task events were captured"
    for args in events:
        # Ids only (Flower shows these): a run or job id, "sweep", "inventory:<key>".
        assert re.fullmatch(r"[\[(](?:'[\w:.-]{1,80}',? ?)*[\])]\{\}", args), args
    logs = "\n".join(Path(p.log).read_text(errors="replace") for p in world.stack.processes)
    redis_events = "\n".join(e.message for _, e in world.ctx.store.events(run_id))
    places = {"responses": "\n".join(responses), "logs": logs, "events": redis_events}
    places["task args"] = "\n".join(events)
    for secret in secrets:
        for where, text in places.items():
            assert secret not in text, f"a secret appears in {where}"


def _key_body(private_key: str) -> str:
    """A line from the middle of a PEM/OpenSSH private key: unique to that key."""
    lines = [line for line in private_key.splitlines() if line and "-----" not in line]
    return lines[len(lines) // 2]
