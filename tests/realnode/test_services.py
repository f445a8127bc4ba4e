"""Services on real pods: probes decide which replicas the proxy sends requests to."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.polling import wait_until
from tests.realnode.world import SMALL, START_S, apply, run, running, stop
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def test_a_probed_replica_gets_requests_only_while_its_probe_passes(
    real_stack: Stack, tmp_path: Path, team_volume: str, team_volume_dir: Path
) -> None:
    # The replica serves a directory of this host (the team volume), so the test
    # decides when /ready exists: the probe's answer, without any sleep in the pod.
    site = team_volume_dir / "probed"
    site.mkdir()
    (site / "index.html").write_text("hello from the replica\n")
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: service
        name: probed
        port: 8000
        auth: false
        volumes: [{team_volume}:/data]
        probes:
          - type: http
            url: /ready
            interval: 1s
            timeout: 2s
        commands:
          - python3 -m http.server 8000 -d /data/probed
        {SMALL}
        """,
    )
    url = f"{real_stack.url}/proxy/services/main/{name}/"
    try:
        live = running(real_stack, name)
        assert live["jobs"][0]["ready"] is False  # /ready is a 404: not ready yet
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 503
        assert "1 running, none ready" in refused.text
        assert "running, 0/1 ready" in _ps(real_stack)

        (site / "ready").write_text("ok\n")
        wait_until(
            lambda: _get(url) == (200, "hello from the replica\n"),
            timeout=START_S,
            what="the replica serving once its probe passes",
        )
        assert run(real_stack, name)["jobs"][0]["ready"] is True
        assert "running, 1/1 ready" in _ps(real_stack)

        (site / "ready").unlink()
        wait_until(
            lambda: _get(url)[0] == 503, timeout=START_S, what="the replica out once it fails"
        )
        assert run(real_stack, name)["jobs"][0]["ready"] is False
    finally:
        stop(real_stack, name)


def _get(url: str) -> tuple[int, str]:
    try:
        r = httpx.get(url, timeout=10)
    except httpx.HTTPError as e:
        return 0, str(e)
    return r.status_code, r.text


def _ps(stack: Stack) -> str:
    result = stack.cli("ps", env={"COLUMNS": "200"})  # wide enough that no cell folds
    assert result.returncode == 0, result.stderr
    return result.stdout
