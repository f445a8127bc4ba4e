"""A run's code through the API: upload, refusals naming the field, Secrets made and removed."""

from __future__ import annotations

import io
import os
import tarfile
from typing import Any

import pytest

from shared import kube
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

CONF = {
    "type": "task",
    "name": "with-code",
    "repos": ["."],
    "commands": ["python train.py"],
    "resources": {"cpu": "1..", "memory": "1GB.."},
}


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("0/train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _upload(stack: Stack, data: bytes) -> Any:
    with stack.client() as c:
        return c.post(
            "/api/projects/main/code",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )


def _submit(stack: Stack, conf: dict[str, Any], code: str | None) -> Any:
    with stack.client() as c:
        body: dict[str, Any] = {"configuration": conf}
        if code is not None:
            body["code"] = code
        return c.post("/api/projects/main/runs", json=body)


def test_a_run_with_repos_but_no_code_is_refused_naming_repos(stack: Stack) -> None:
    r = _submit(stack, CONF, None)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "repos"
    assert "berth apply" in r.json()["error"]["message"]


def test_a_code_archive_never_uploaded_is_refused_naming_code(stack: Stack) -> None:
    r = _submit(stack, CONF, "0" * 64)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "code"


def test_an_archive_over_the_limit_is_refused_with_the_limit(stack: Stack) -> None:
    limit = stack.settings().code.max_bytes
    r = _upload(stack, os.urandom(limit + 1))
    assert r.status_code == 413, r.text
    assert "code.max_bytes" in r.json()["error"]["message"]


def test_the_archive_reaches_the_pods_through_secrets_removed_with_the_run(
    stack: Stack, kube_admin: kube.Kube
) -> None:
    uploaded = _upload(stack, _archive())
    assert uploaded.status_code == 201, uploaded.text
    code = uploaded.json()["code"]
    assert len(code) == 64
    r = _submit(stack, CONF, code)
    assert r.status_code == 202, r.text
    selector = f"{kube.LABEL_RUN}=with-code"

    def pod() -> Any:
        pods = kube_admin.call(
            kube_admin.core.list_namespaced_pod, stack.namespace, label_selector=selector
        ).items
        return pods[0] if pods else None

    created = wait_until(pod, timeout=60, what="the run's pod")
    volume = next(v for v in created.spec.volumes if v.name == "berth-code")
    names = [s.secret.name for s in volume.projected.sources]
    assert len(names) == 1 and names[0].startswith("berth-main-with-code-code-")
    secret = kube_admin.call(kube_admin.core.read_namespaced_secret, names[0], stack.namespace)
    assert secret.metadata.labels[kube.LABEL_RUN] == "with-code"
    (container,) = created.spec.containers
    assert container.working_dir == "/workflow"
    assert any(m.mount_path == "/berth/code" for m in container.volume_mounts)

    with stack.client() as c:
        assert c.post("/api/projects/main/runs/with-code/stop", json={}).status_code == 200

    def secrets_left() -> list[str]:
        listed = kube_admin.call(
            kube_admin.core.list_namespaced_secret, stack.namespace, label_selector=selector
        ).items
        return [s.metadata.name for s in listed if "-code-" in s.metadata.name]

    wait_until(lambda: secrets_left() == [], timeout=60, what="the code Secrets deleted")
