"""The README's first command, as a newcomer runs it: from nothing to a real run's output.

``make local`` installs, builds, starts the local cluster with its real nodes,
starts Berth, configures the CLI and follows ``examples/task.dstack.yml`` to its
end. Then every example is applied as the README suggests, and ``berth local
down`` must leave no process of it running.

This directory sorts before ``tests/realnode``: the machine holds one set of real
nodes at a time, and this test's set is down again before that tier starts its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import partial
from pathlib import Path

import httpx
import pytest

from cli.local import cluster, realnode
from cli.local.processes import is_running
from shared.errors import LocalClusterError
from tests.polling import wait_until
from tests.stack import BERTH

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

ROOT = Path(__file__).resolve().parents[2]
SLOW = 180.0
KEEP = (
    "BERTH_HOME",
    "BERTH_CACHE_DIR",
)  # a fresh home imports the images into two new containerds (~40 s)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    try:
        realnode.node.preflight()
    except LocalClusterError as e:
        pytest.skip(f"real-node tier skipped: {e}")
    base = tmp_path_factory.mktemp("newcomer")
    (base / "home").mkdir()
    real_home = Path.home()
    env = {
        **os.environ,
        "BERTH_HOME": str(base / "berth"),
        # A home of its own, so attach's ~/.ssh/config Include lands here; the build
        # caches stay where the machine has them (a cold build is ten minutes).
        "HOME": str(base / "home"),
        "BERTH_CACHE_DIR": os.environ.get("BERTH_CACHE_DIR", str(real_home / ".cache" / "berth")),
        "GOCACHE": _go_env("GOCACHE"),
        "GOMODCACHE": _go_env("GOMODCACHE"),
        "GOPATH": _go_env("GOPATH"),
    }
    for name in [k for k in env if k.startswith("BERTH_") and k not in KEEP]:
        del env[name]  # a newcomer has none of the test session's settings
    return env


def _go_env(name: str) -> str:
    return subprocess.run(
        ["go", "env", name], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def _run(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_make_local_ends_with_the_examples_real_output_and_everything_runs(
    newcomer: dict[str, str],
) -> None:
    env = newcomer
    state_dir = Path(env["BERTH_HOME"]) / "local"
    try:
        first = _run(env, "make", "local", timeout=1800)  # a cold machine builds for minutes
        out = first.stdout
        assert first.returncode == 0, out[-3000:] + first.stderr[-3000:]
        assert "hello from berth-main-hello-gpu-0-0, node rank 0 of 1" in out, out
        assert "GPUs given to this run: GPU-berth-real-" in out
        assert "python 3.11" in out
        assert "hello-gpu: done" in out
        for line in ("Berth is running", "Flower", "berth local down", "examples/"):
            assert line in out, out
        state = cluster.read_state(state_dir)
        assert state is not None and state.berth is not None
        _cli_works_with_no_flags(env)
        _flower_asks_for_its_password(state.berth.flower_url, state.berth.flower_auth)
        _every_example_does_what_it_says(env, state.berth.api_url, state.berth.admin_token)
        _bad_input_is_one_clear_line(env, Path(env["HOME"]))

        again = _run(env, "make", "local", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
        recorded = list(state.processes.values())
        assert all(is_running(p) for p in recorded)
    finally:
        down = _run(env, BERTH, "local", "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert not [p.name for p in recorded if is_running(p)]
    stores = list((state_dir / "realnode").glob("node-*/containerd-root"))
    assert len(stores) == 2, stores  # kept by a plain down: the next up starts at once
    # The unpacked images (2 GiB a node) go only when asked, and then every one goes.
    purge = _run(env, BERTH, "local", "down", "--remove-images")
    assert "nothing was running" in purge.stdout, purge.stdout + purge.stderr
    assert not [store for store in stores if store.exists()]


def _cli_works_with_no_flags(env: dict[str, str]) -> None:
    ps = _run(env, BERTH, "ps", "-a")
    assert ps.returncode == 0 and "hello-gpu" in ps.stdout, ps.stdout + ps.stderr


def _flower_asks_for_its_password(url: str, auth: str) -> None:
    user, password = auth.split(":", 1)
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, auth=(user, password), timeout=10).status_code == 200


def _every_example_does_what_it_says(env: dict[str, str], api: str, token: str) -> None:
    two = _run(env, BERTH, "apply", "-f", "examples/multinode.dstack.yml", "-y", timeout=SLOW)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "rank 0 heard: hello from rank 1 from 10.244." in two.stdout, two.stdout

    fleet = _run(env, BERTH, "apply", "-f", "examples/fleet.dstack.yml")
    assert fleet.returncode == 0 and "gpu-cluster" in fleet.stdout, fleet.stderr
    assert "berth-real-0" in fleet.stdout and "berth-real-1" in fleet.stdout

    volume = _run(env, BERTH, "apply", "-f", "examples/volume.dstack.yml")
    assert volume.returncode == 0, volume.stderr
    assert "volume data: claim berth-local-data (Bound)" in volume.stdout

    web = _run(env, BERTH, "apply", "-f", "examples/service.dstack.yml", "-y", "-d")
    assert web.returncode == 0, web.stderr
    seen: set[str] = set()

    def both_replicas() -> bool:
        try:
            r = httpx.get(
                f"{api}/proxy/services/main/hello-web/",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        except httpx.HTTPError:
            return False
        if r.status_code == 200:
            seen.add(r.text.split(" (")[0])
        return seen == {"hello from replica 0", "hello from replica 1"}

    wait_until(both_replicas, timeout=SLOW, what="both replicas of hello-web")

    ide = _run(env, BERTH, "apply", "-f", "examples/dev-environment.dstack.yml", "-y", "-d")
    assert ide.returncode == 0, ide.stderr
    # The CLI made and registered a key before submitting; ~/.ssh is left alone.
    assert (Path(env["BERTH_HOME"]) / "ssh" / "id_ed25519").exists()
    assert not (Path(env["HOME"]) / ".ssh" / "id_ed25519").exists()
    wait_until(partial(_running, env, "my-ide"), timeout=SLOW, what="my-ide running")
    attach = _run(env, BERTH, "attach", "my-ide", "-d", "-y")
    assert attach.returncode == 0, attach.stdout + attach.stderr
    wait_until(partial(_ssh, env, "my-ide"), timeout=SLOW, what="ssh my-ide")
    assert _ssh(env, "my-ide").startswith("my-ide GPU-berth-real-")


def _running(env: dict[str, str], name: str) -> bool:
    ps = _run(env, BERTH, "ps", "--json")
    runs = json.loads(ps.stdout) if ps.returncode == 0 else []
    return any(r["name"] == name and r["status"] == "running" for r in runs)


def _ssh(env: dict[str, str], host: str) -> str:
    # `ssh my-ide` as the user types it, through the Include attach added to ~/.ssh/config
    # (named with -F: ssh finds ~ from the password database, not from $HOME).
    config = str(Path(env["HOME"]) / ".ssh" / "config")
    command = "echo $DSTACK_RUN_NAME $NVIDIA_VISIBLE_DEVICES"
    result = _run(env, "ssh", "-F", config, host, command, timeout=30)
    return result.stdout.strip() if result.returncode == 0 else ""


def _bad_input_is_one_clear_line(env: dict[str, str], home: Path) -> None:
    typo = home / "typo.dstack.yml"
    typo.write_text("type: task\nname: typo\ncomands: [echo hi]\nresources: {gpu: 1}\n")
    result = _run(env, BERTH, "apply", "-f", str(typo), "-y")
    assert result.returncode == 1
    assert "comands" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "hello-gpu" in _run(env, BERTH, "ps", "-a").stdout  # nothing accepted was lost
