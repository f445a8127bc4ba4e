"""Metrics, structured logs, and no secret in any of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

REGISTRY_PASSWORD = "pa55-w0rd-never-logged"


def test_metrics_show_runs_queue_and_inventory_freshness(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post(
            "/api/projects/main/runs",
            json={"configuration": {"type": "task", "name": "metered", "commands": ["x"]}},
        )
        assert r.status_code == 202, r.text
        body = c.get("/metrics").text
    assert 'berth_runs{project="main",status=' in body
    assert "berth_queue_depth" in body
    assert "berth_inventory_age_seconds{cluster=" in body
    assert "berth_kubernetes_api_errors_total" in body


def test_no_token_password_or_kubeconfig_appears_in_logs_events_or_responses(
    stack: Stack, local_cluster: ClusterState
) -> None:
    conf = {
        "type": "task",
        "name": "private-image",
        "image": "registry.example.com/team/trainer:1",
        "commands": ["train"],
        "registry_auth": {"username": "bot", "password": REGISTRY_PASSWORD},
        "env": {"KWOK_RUN_FOR": "1s"},
    }
    with stack.client() as c:
        created = c.post("/api/projects/main/runs", json={"configuration": conf})
        assert created.status_code == 202, created.text
        wait_until(
            lambda: c.get("/api/projects/main/runs/private-image").json()["status"] == "done",
            timeout=60,
            what="private-image done",
        )
        responses = [
            created.text,
            c.get("/api/projects/main/runs/private-image").text,
            c.get("/api/projects/main/runs?all=true").text,
            c.get("/api/projects/main/runs/private-image/events").text,
            c.get("/metrics").text,
        ]
    kubeconfig_token = local_cluster.admin_token
    secrets = [REGISTRY_PASSWORD, stack.admin_token, kubeconfig_token]
    logs = "\n".join(Path(p.log).read_text(errors="replace") for p in stack.processes)
    for secret in secrets:
        assert secret not in logs
        for text in responses:
            assert secret not in text
    # The run's own log lines name it by id, so an operator can follow it.
    run_id = json.loads(responses[1])["id"]
    assert f"run={run_id}" in logs or run_id in logs
