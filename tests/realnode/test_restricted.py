"""Runs in a namespace that enforces Pod Security ``restricted``, on real kubelets.

Project ``locked`` lives in ``berth-locked``, labelled
``pod-security.kubernetes.io/enforce=restricted``, and its backend leaves
``pod_security`` at the default: Berth reads the label, builds pods the
admission plugin accepts (non-root UID 1000 with GID 0, no privilege
escalation, no capabilities, RuntimeDefault seccomp) and runs sshd, in the
run pods and in the namespace's own jump host, as that non-root user.

The module starts a Berth of its own for that project and deletes the namespace
at the end: its jump pod (10m CPU) would otherwise stay on a two-core node and
crowd the other modules' one-CPU pods.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from cli.local.cluster import ClusterState
from shared import kube
from tests.polling import wait_until
from tests.realnode.conftest import (
    LOCKED_JUMP_PORT,
    LOCKED_NAMESPACE,
    LOCKED_PROJECT,
    real_backend,
    real_env,
)
from tests.realnode.world import SMALL, START_S, running, write
from tests.stack import BERTH, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


@pytest.fixture(scope="module")
def locked_stack(
    real_cluster: ClusterState, real_kube: kube.Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    assert real_cluster.real_nodes is not None
    # Labelled only: the backend's pod_security stays at its default, so Berth must
    # read the label to build pods this namespace admits.
    enforce = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    k = real_kube
    k.call(k.core.create_namespace, {"metadata": {"name": LOCKED_NAMESPACE, "labels": enforce}})
    node_ip = real_cluster.real_nodes.ips[0]
    s = start_stack(
        real_cluster,
        tmp_path_factory.mktemp("locked-stack"),
        namespace=LOCKED_NAMESPACE,
        workers=1,
        # No jump host for the other projects: real_stack's owns NodePort 30022.
        backend=real_backend(real_cluster, jump_port=None),
        env=real_env(real_cluster),
        extra_projects={
            LOCKED_PROJECT: {
                "namespace": LOCKED_NAMESPACE,
                "proxy_jump": {"hostname": node_ip, "port": LOCKED_JUMP_PORT},
            }
        },
    )
    try:
        yield s
    finally:
        s.stop()
        k.call(k.core.delete_namespace, LOCKED_NAMESPACE)

        def gone() -> bool:
            return not k.call(k.core.list_namespaced_pod, LOCKED_NAMESPACE).items

        wait_until(gone, timeout=120, what=f"the pods of {LOCKED_NAMESPACE} deleted")


@dataclass
class LockedUser:
    """A member of ``locked`` with a CLI home of its own (config, SSH key, ssh configs)."""

    home: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def locked(locked_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> LockedUser:
    home = tmp_path_factory.mktemp("locked-user")
    with locked_stack.client() as c:
        r = c.post("/api/users", json={"name": "lockeduser", "projects": [LOCKED_PROJECT]})
        assert r.status_code == 201, r.text
        token = str(r.json()["token"])
    berth_home = home / "berth"
    berth_home.mkdir()
    (berth_home / "config.yml").write_text(
        yaml.safe_dump({"url": locked_stack.url, "token": token, "project": LOCKED_PROJECT})
    )
    return LockedUser(home=berth_home, env={"BERTH_HOME": str(berth_home), "HOME": str(home)})


def _apply(
    stack: Stack, user: LockedUser, k: kube.Kube, tmp_path: Path, text: str, *args: str
) -> str:
    result = stack.cli(
        "apply", "-f", str(write(tmp_path, text)), "-y", *args, env=user.env, timeout=2 * START_S
    )
    assert result.returncode == 0, result.stderr + result.stdout + _pods(k) + stack.logs()
    return result.stdout


def _pods(k: kube.Kube) -> str:
    """The locked namespace's pods as the kubelet reports them, for a failure message."""
    pods = k.call(k.core.list_namespaced_pod, LOCKED_NAMESPACE).items
    return "".join(f"\n--- pod {p.metadata.name}: {p.status}\n" for p in pods)


def test_a_task_runs_as_non_root_and_exits_0_with_its_output_seen(
    locked_stack: Stack, locked: LockedUser, real_kube: kube.Kube, tmp_path: Path
) -> None:
    out = _apply(
        locked_stack,
        locked,
        real_kube,
        tmp_path,
        f"""
        type: task
        name: locked-task
        commands:
          - echo "uid=$(id -u) gid=$(id -g) home=$HOME"
          - echo note > "$HOME/note" && echo home-writable
          - python3 -c 'print("restricted", "ok")'
        {SMALL}
        """,
    )
    assert "pod security: restricted (namespace label" in out, out
    assert "uid=1000 gid=0 home=/berth/home" in out, out
    assert "home-writable" in out and "restricted ok" in out, out
    assert "locked-task: done" in out, out


def test_a_privileged_run_is_refused_at_submission_naming_the_field(
    locked_stack: Stack, locked: LockedUser, tmp_path: Path
) -> None:
    path = write(
        tmp_path, f"type: task\nname: locked-priv\nprivileged: true\ncommands: [id]\n{SMALL}\n"
    )
    result = locked_stack.cli("apply", "-f", str(path), "-y", env=locked.env)
    assert result.returncode != 0
    text = result.stderr + result.stdout
    assert "privileged" in text and "restricted" in text, text


@pytest.fixture(scope="module")
def locked_ide(
    locked_stack: Stack,
    locked: LockedUser,
    real_kube: kube.Kube,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("locked-ide")
    _apply(
        locked_stack,
        locked,
        real_kube,
        tmp,
        f"""
        type: dev-environment
        name: locked-ide
        ide: vscode
        {SMALL}
        """,
        "-d",
    )
    running(locked_stack, "locked-ide", project=LOCKED_PROJECT)
    yield "locked-ide"
    _stop(locked_stack, locked, "locked-ide")


def _stop(stack: Stack, user: LockedUser, name: str) -> None:
    stack.cli("stop", name, "--abort", env=user.env)


def _ssh(config: Path, host: str, command: str) -> str | None:
    result = subprocess.run(
        ["ssh", "-F", str(config), host, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def test_a_dev_environment_is_reached_over_ssh_as_its_non_root_user(
    locked_stack: Stack, locked: LockedUser, locked_ide: str, real_kube: kube.Kube
) -> None:
    result = subprocess.run(
        [BERTH, "attach", locked_ide, "-d", "-y"],
        env=locked_stack.env | locked.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    config = locked.home / "ssh" / f"{locked_ide}.config"
    out = wait_until(
        partial(_ssh, config, locked_ide, "whoami; id -u; echo $DSTACK_RUN_NAME"),
        timeout=START_S,
        what=f"ssh {locked_ide} through the restricted jump host",
    )
    assert out.split() == ["berth", "1000", locked_ide], out
    # The jump host in the locked namespace is restricted too (else it would not run).
    k = real_kube
    (jump,) = k.call(
        k.apps.list_namespaced_deployment, LOCKED_NAMESPACE, label_selector="berth.dev/jump-host"
    ).items
    assert jump.spec.template.spec.security_context.run_as_non_root is True


def test_a_service_answers_through_the_proxy(
    locked_stack: Stack, locked: LockedUser, real_kube: kube.Kube, tmp_path: Path
) -> None:
    _apply(
        locked_stack,
        locked,
        real_kube,
        tmp_path,
        f"""
        type: service
        name: locked-web
        port: 8000
        auth: false
        commands:
          - mkdir -p /tmp/srv && echo "served by $(id -u)" > /tmp/srv/index.html
          - python3 -m http.server 8000 -d /tmp/srv
        {SMALL}
        """,
        "-d",
    )
    try:
        running(locked_stack, "locked-web", project=LOCKED_PROJECT)

        def answer() -> str | None:
            try:
                r = httpx.get(
                    f"{locked_stack.url}/proxy/services/{LOCKED_PROJECT}/locked-web/", timeout=10
                )
            except httpx.HTTPError:
                return None
            return r.text if r.status_code == 200 else None

        text = wait_until(answer, timeout=START_S, what="locked-web through the proxy")
        assert text.strip() == "served by 1000"
    finally:
        _stop(locked_stack, locked, "locked-web")
