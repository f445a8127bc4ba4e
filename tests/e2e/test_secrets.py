"""Project secrets end to end: set by an admin, named by a run, only ever in a Secret."""

from __future__ import annotations

import base64
import json
import secrets as random
import subprocess
from typing import Any

import pytest

from shared import kube
from shared.state.store import Store
from tests.polling import wait_until
from tests.stack import BERTH, Stack

pytestmark = pytest.mark.integration

VALUE = f"hf_{random.token_hex(12)}"


def _cli(stack: Stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BERTH, *args],
        env=stack.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _submit(stack: Stack, conf: dict[str, Any], token: str | None = None) -> Any:
    with stack.client(token) as c:
        return c.post("/api/projects/main/runs", json={"configuration": conf})


def test_a_secret_reaches_the_pod_only_through_a_kubernetes_secret(
    stack: Stack, kube_admin: kube.Kube
) -> None:
    assert _cli(stack, "secret", "set", "hf_token", stdin=VALUE + "\n").returncode == 0
    listed = _cli(stack, "secret", "list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["hf_token"]
    assert VALUE not in listed.stdout

    conf = {
        "type": "task",
        "name": "uses-secret",
        "commands": ["train"],
        "env": {"HF_TOKEN": "${{ secrets.hf_token }}", "PLAIN": "x"},
        "resources": {"cpu": "1..", "memory": "1GB.."},
    }
    r = _submit(stack, conf)
    assert r.status_code == 202, r.text
    assert VALUE not in r.text and "${{ secrets.hf_token }}" in r.text
    selector = f"{kube.LABEL_RUN}=uses-secret"

    def pod() -> Any:
        pods = kube_admin.call(
            kube_admin.core.list_namespaced_pod, stack.namespace, label_selector=selector
        ).items
        return pods[0] if pods else None

    created = wait_until(pod, timeout=60, what="the run's pod")
    env = {e.name: e for e in created.spec.containers[0].env}
    assert env["PLAIN"].value == "x"
    ref = env["HF_TOKEN"].value_from.secret_key_ref
    assert env["HF_TOKEN"].value is None and ref.key == "env-HF_TOKEN"
    secret = kube_admin.call(kube_admin.core.read_namespaced_secret, ref.name, stack.namespace)
    assert base64.b64decode(secret.data["env-HF_TOKEN"]).decode() == VALUE
    assert VALUE not in json.dumps(kube_admin.api.sanitize_for_serialization(created))

    # Nowhere else: not the run, its events, the worker logs, nor Redis in plain text.
    with stack.client() as c:
        assert VALUE not in c.get("/api/projects/main/runs/uses-secret").text
        assert VALUE not in c.get("/api/projects/main/runs/uses-secret/events").text
    assert VALUE not in stack.logs()
    store = Store.connect(
        stack.env["BERTH_REDIS__URL"], prefix=stack.env["BERTH_REDIS__KEY_PREFIX"], timeout_s=10
    )
    try:
        for key in store.r.scan_iter(f"{stack.env['BERTH_REDIS__KEY_PREFIX']}*", count=1000):
            kind = store.r.execute_command("TYPE", key)
            if kind == b"hash":
                dump = store.r.hgetall(key)
                raw = b"".join(list(dump.keys()) + list(dump.values()))
            elif kind == b"string":
                raw = store.r.get(key) or b""
            else:
                continue
            assert VALUE.encode() not in raw, key
    finally:
        store.close()
    with stack.client() as c:
        assert c.post("/api/projects/main/runs/uses-secret/stop", json={}).status_code == 200


def test_a_run_naming_a_secret_that_does_not_exist_is_refused_naming_the_field(
    stack: Stack,
) -> None:
    conf = {"type": "task", "commands": ["x"], "env": ["TOKEN=${{ secrets.nope }}"]}
    r = _submit(stack, conf)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "env.TOKEN"
    assert "secret nope does not exist" in error["message"]


def test_members_see_names_but_only_admins_set_or_delete(stack: Stack) -> None:
    with stack.client() as c:
        created = c.post("/api/users", json={"name": "secret-reader", "projects": ["main"]})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert c.put("/api/projects/main/secrets/shared", json={"value": "v"}).status_code == 204
    with stack.client(token) as c:
        assert "shared" in {s["name"] for s in c.get("/api/projects/main/secrets").json()}
        assert c.put("/api/projects/main/secrets/mine", json={"value": "v"}).status_code == 403
        assert c.delete("/api/projects/main/secrets/shared").status_code == 403
    assert _cli(stack, "secret", "delete", "shared").returncode == 0
    with stack.client() as c:
        assert c.delete("/api/projects/main/secrets/shared").status_code == 404
        assert (
            c.put("/api/projects/main/secrets/bad%20name", json={"value": "v"}).status_code == 422
        )
