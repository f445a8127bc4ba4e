"""``docker: true`` on a real node: dockerd runs in the pod, and Docker works there.

The node is air-gapped, so nothing can be pulled: the nested images are made in
the pod itself from the dind image's static busybox, with ``docker import`` and
with ``docker build`` from ``scratch``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realnode.world import SMALL, apply_and_follow, run
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

# The nested containers' commands; `busybox` as PID 1 runs its first argument's applet.
_IMPORT = (
    "tar -C /usr/bin -c busybox |"
    " docker import -c 'ENTRYPOINT [\"/busybox\"]' - berth-test/imported >/dev/null"
)
_BUILD = (
    "mkdir -p /tmp/ctx && cp /usr/bin/busybox /tmp/ctx/ &&"
    " printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nENTRYPOINT [\"/bin/busybox\"]\\n'"
    " > /tmp/ctx/Dockerfile && docker build -q -t berth-test/built /tmp/ctx >/dev/null"
)
# A web server in one nested container, fetched from another over Docker's default
# bridge (docker0, with the iptables rules dockerd writes into the pod's netns). With
# busybox's nc: Debian's static busybox wget crashes (SIGSEGV, even for an address)
# in a root filesystem that holds nothing but busybox; its nc does not.
_WEB = (
    "docker run -d --name web berth-test/imported sh -c"
    " 'mkdir /www && echo bridge-ok > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null"
)
_FETCH = (
    'web=$(docker inspect -f "{{.NetworkSettings.IPAddress}}" web) &&'
    " for i in $(seq 10); do"  # the server may take a moment to listen: poll, bounded
    " docker run --rm berth-test/imported sh -c"
    " \"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $web 80\" | grep -x bridge-ok && break;"
    " sleep 1; done"
)


def test_a_task_with_docker_builds_and_runs_images_offline_inside_its_pod(
    real_stack: Stack, tmp_path: Path
) -> None:
    result = apply_and_follow(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: nested
        docker: true
        commands:
          - docker info --format 'storage={{{{.Driver}}}}'
          - {_IMPORT}
          - docker run --rm berth-test/imported echo "imported says $((6 * 7))"
          - {_BUILD}
          - docker run --rm berth-test/built echo built-ok
          - {_WEB}
          - {_FETCH}
          - docker compose version --short | sed 's/^/compose=/'
        {SMALL}
        """,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr + real_stack.logs()
    # overlay2: Docker's data root is an emptyDir on the node's disk, not the overlay
    # root filesystem (on which dockerd would fall back to the slow vfs driver).
    assert "storage=overlay2\n" in out, out
    assert "imported says 42\n" in out, out
    assert "built-ok\n" in out, out
    assert "bridge-ok\n" in out, out
    assert "compose=1." in out, out  # Debian's Compose v1 behind `docker compose`
    finished = run(real_stack, "nested")
    assert finished["status"] == "done"
    assert finished["jobs"][0]["exit_code"] == 0


def test_docker_where_the_project_does_not_allow_privileged_runs_is_refused_naming_it(
    real_stack: Stack,
) -> None:
    # Project "other" leaves allow_privileged off; Docker-in-Docker needs a privileged pod.
    body = {"type": "task", "name": "no-dind", "docker": True, "commands": ["docker info"]}
    with real_stack.client() as c:
        r = c.post("/api/projects/other/runs", json={"configuration": body})
        assert r.status_code == 403, r.text
        assert "docker: true (Docker-in-Docker runs a privileged container)" in r.text
        assert "allow_privileged" in r.text
        assert c.get("/api/projects/other/runs/no-dind").status_code == 404  # nothing stored
