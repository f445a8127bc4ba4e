"""The dashboard in headless Chromium against the real local stack.

A person logs in with their token, watches the GPU map change as a run starts and
ends (no reload), sees why a run waits and where it stands, opens a run and reads
its output. Another project's member sees none of it, a bad or expired login gets
the login page, and HTML in what a run prints shows as text. Screenshots are kept
in ``test-artifacts/dashboard/`` for a person to look at.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.local import pod_logs
from cli.local.cluster import ClusterState
from shared import kube
from tests.cdp import Browser
from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
# The local pool with a single one-GPU node (a V100): one run fills it, the next waits.
V100 = "resources: {gpu: V100:1}"
HTML_LINE = "<b>bold?</b> <script>document.title='owned'</script> loss=0.5"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


def _login(browser: Browser, stack: Stack, token: str) -> None:
    browser.goto(f"{stack.url}/dashboard")
    browser.wait_for("!!document.getElementById('token')", what="the login form")
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        " document.querySelector('form').submit(); true"
    )
    browser.wait_for(
        "!!document.body && document.body.dataset.user !== undefined",
        what="the dashboard after login",
    )


def _apply(stack: Stack, tmp_path: Path, name: str, extra: str = "") -> None:
    conf = tmp_path / f"{name}.dstack.yml"
    conf.write_text(
        textwrap.dedent(f"type: task\nname: {name}\ncommands: [python train.py]\n{V100}\n{extra}")
    )
    result = stack.cli("apply", "-f", str(conf), "-y", "-d")
    assert result.returncode == 0, result.stdout + result.stderr


def _used_v100(browser: Browser) -> int:
    value = browser.evaluate(
        "(() => { const m = [...document.querySelectorAll('.model')]"
        ".find(e => e.dataset.model.startsWith('V100'));"
        " return m ? m.querySelectorAll('.gpu.used').length : -1; })()"
    )
    return int(value)


def test_the_gpu_map_queue_and_a_runs_output_live_without_a_reload(
    stack: Stack,
    browser: Browser,
    tmp_path: Path,
    kube_admin: kube.Kube,
    local_cluster: ClusterState,
) -> None:
    pod_logs.set_pod_logs(
        kube_admin,
        Path(local_cluster.directory),
        namespace=stack.namespace,
        pod="berth-main-dash-first-0-0",
        lines=["epoch 1 loss=0.9", HTML_LINE],
    )
    _login(browser, stack, stack.admin_token)
    browser.wait_for("document.body.dataset.updates >= 1", what="the first state drawn")
    assert _used_v100(browser) == 0
    # Nodes are grouped by their pool label within a model (the local pools set one).
    pool = browser.evaluate(
        "document.querySelector('.model[data-model^=\"V100\"] .pool-group').dataset.pool"
    )
    assert pool == "aws-v100"
    browser.evaluate("window.__sameDocument = 'yes'")
    browser.screenshot(ARTIFACTS / "01-empty.png")
    try:
        _apply(stack, tmp_path, "dash-first")
        wait_until(lambda: _used_v100(browser) == 1, timeout=60, what="the V100 shown in use")
        _apply(stack, tmp_path, "dash-second")
        row = browser.wait_for(
            "(() => { const r = document.querySelector('tr.waiting[data-run=\"dash-second\"]');"
            " return r && r.textContent.includes('1 of 1') ? r.textContent : null; })()",
            timeout=60,
            what="dash-second waiting at position 1",
        )
        assert "1x V100" in row
        browser.screenshot(ARTIFACTS / "02-one-running-one-waiting.png")
        gpu_title = browser.evaluate(
            "document.querySelector('.model[data-model^=\"V100\"] .gpu.used').title"
        )
        assert "dash-first (admin)" in gpu_title
        # Stopping the first frees the GPU and the second takes it: the map never reloaded.
        assert stack.cli("stop", "dash-first", "--abort").returncode == 0
        browser.wait_for(
            "document.querySelector('tr.waiting[data-run=\"dash-second\"]') === null",
            timeout=60,
            what="dash-second out of the queue",
        )
        wait_until(
            lambda: (
                "dash-second"
                in browser.evaluate(
                    "document.querySelector('.model[data-model^=\"V100\"] .gpu.used')?.title || ''"
                )
            ),
            timeout=60,
            what="the V100 held by dash-second",
        )
        assert browser.evaluate("window.__sameDocument") == "yes"
        assert int(browser.evaluate("document.body.dataset.updates")) >= 3

        # The first run's page: its events and its output, HTML shown as text.
        browser.goto(f"{stack.url}/dashboard/runs/main/dash-first")
        text = browser.wait_for(
            "(() => { const t = document.getElementById('logs').textContent;"
            " return t.includes('loss=0.5') ? t : null; })()",
            what="the run's output on its page",
        )
        assert "epoch 1 loss=0.9" in text and HTML_LINE in text
        assert browser.evaluate("document.querySelectorAll('#logs *').length") == 0
        assert browser.evaluate("document.title") != "owned"
        browser.wait_for(
            "document.getElementById('events').textContent.includes('stopped')",
            what="the run's events",
        )
        assert "berth attach dash-first" in browser.evaluate(
            "document.getElementById('ssh').textContent"
        )
        browser.screenshot(ARTIFACTS / "03-run-page.png")
    finally:
        for name in ("dash-first", "dash-second"):
            stack.cli("stop", name, "--abort")


def test_another_projects_member_sees_none_of_mains_runs(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    with stack.client() as http:
        made = http.post("/api/users", json={"name": "dash-outsider", "projects": ["other"]})
        assert made.status_code == 201, made.text
    token = made.json()["token"]
    _apply(stack, tmp_path, "dash-private")
    try:
        _login(browser, stack, token)
        browser.wait_for("document.body.dataset.updates >= 1", what="the first state drawn")
        page = browser.evaluate("document.body.innerText")
        assert "dash-private" not in page
        projects = browser.evaluate(
            "[...document.querySelectorAll('section.project')].map(s => s.dataset.project)"
        )
        assert projects == ["other"]
        # Its GPU is shown in use, but not by whom.
        wait_until(
            lambda: (
                "another project"
                in browser.evaluate(
                    "document.querySelector('.model[data-model^=\"V100\"] .gpu.used')?.title || ''"
                )
            ),
            timeout=60,
            what="the V100 shown held by another project",
        )
        browser.goto(f"{stack.url}/dashboard/runs/main/dash-private")
        assert "Not found" in browser.evaluate("document.body.innerText")
        cookie = _session_cookie(browser)
        answer = httpx.get(
            f"{stack.url}/dashboard/runs/main/dash-private/logs",
            cookies={"berth_session": cookie},
            timeout=10,
        )
        assert answer.status_code == 404
    finally:
        stack.cli("stop", "dash-private", "--abort")


def test_a_wrong_token_or_an_ended_session_gets_the_login_page_never_a_trace(
    stack: Stack, browser: Browser
) -> None:
    wrong = httpx.post(f"{stack.url}/dashboard/login", data={"token": "not-a-token"}, timeout=10)
    assert wrong.status_code == 401
    assert "That token is not known to Berth." in wrong.text
    assert "Traceback" not in wrong.text
    assert httpx.get(f"{stack.url}/dashboard/state", timeout=10).status_code == 401
    forged = httpx.get(
        f"{stack.url}/dashboard/state", cookies={"berth_session": "forged"}, timeout=10
    )
    assert forged.status_code == 401

    _login(browser, stack, stack.admin_token)
    cookie = _cookie(browser)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert browser.evaluate("document.cookie") == ""  # out of the page's scripts' reach
    # The session ends (logged out elsewhere, or its TTL passed): the page goes to login.
    httpx.post(
        f"{stack.url}/dashboard/logout", cookies={"berth_session": str(cookie["value"])}, timeout=10
    )
    browser.goto(f"{stack.url}/dashboard")
    browser.wait_for("!!document.getElementById('token')", what="the login page again")


def _cookie(browser: Browser) -> dict[str, object]:
    cookies = browser.call("Network.getAllCookies")["cookies"]
    found: dict[str, object] = next(c for c in cookies if c["name"] == "berth_session")
    return found


def _session_cookie(browser: Browser) -> str:
    return str(_cookie(browser)["value"])
