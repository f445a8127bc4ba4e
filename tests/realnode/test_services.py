"""Services on real pods: probes decide which replicas the proxy sends requests to, and
``scaling`` follows the requests the proxy sees."""

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


def test_a_scaled_service_grows_to_two_replicas_under_load_and_back_to_one(
    real_stack: Stack, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: service
        name: scaled
        port: 8000
        auth: false
        replicas: 1..2
        scaling: {{metric: rps, target: 1, window: 10s, scale_up_delay: 0s, scale_down_delay: 5s}}
        commands:
          - mkdir -p /srv && echo "replica $DSTACK_REPLICA_NUM" > /srv/index.html
          - python3 -m http.server 8000 -d /srv
        {SMALL}
        """,
    )
    url = f"{real_stack.url}/proxy/services/main/{name}/"
    try:
        assert len(running(real_stack, name)["jobs"]) == 1
        seen: set[str] = set()

        def two_replicas_serving() -> bool:
            # Each look is load too: a burst through the proxy, well over 1 request/s.
            for _ in range(5):
                status, text = _get(url)
                if status == 200:
                    seen.add(text.strip())
            return seen == {"replica 0", "replica 1"}

        wait_until(two_replicas_serving, timeout=2 * START_S, what=f"{name} on two replicas")

        def one_replica_left() -> bool:
            statuses = sorted(j["status"] for j in run(real_stack, name)["jobs"])
            return statuses == ["running", "terminated"]

        # No more requests: the window empties, and after the delay a replica retires.
        wait_until(one_replica_left, timeout=START_S, what=f"{name} back to one replica")
        current = run(real_stack, name)
        assert current["status"] == "running"
        retired = [j for j in current["jobs"] if j["status"] != "running"]
        assert retired and all(j["reason"].startswith("scaled down") for j in retired)
        assert all(j["retired"] and j["status"] == "terminated" for j in retired)
        assert _get(url)[0] == 200  # the one left still serves
        assert "running, 1/1 ready" in _ps(real_stack)
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
