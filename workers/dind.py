"""``docker: true``: a Docker daemon inside the run's container (Docker-in-Docker).

dstack's meaning (its ``dstackai/dind`` image and ``start-dockerd`` script): the run
uses the server's dind image, its container is privileged, and dockerd is up
before the first command, so ``docker run``, ``docker build`` and ``docker compose``
just work. Berth does the same with the ``dind_image`` setting and a few lines of
shell in front of the commands, so any image with dockerd and the docker CLI will
do: nothing is installed or downloaded into the pod (air-gapped clusters).

Docker's data root is ``/var/lib/docker``. Unless the run mounts a volume there
(dstack's tip for keeping images between runs), it is an emptyDir: the container's
own root filesystem is an overlay, and overlay2 cannot stack on an overlay, so
dockerd would fall back to the slow ``vfs`` driver.

dockerd's default bridge network (``docker0`` with NAT) works inside the pod: a
privileged container may program iptables in its own network namespace, so a
nested container reaches what the pod reaches, with the pod's address.
"""

from __future__ import annotations

from typing import Any

DATA_ROOT = "/var/lib/docker"
DOCKERD_LOG = "/var/log/dockerd.log"
# dstack's start-dockerd waits 60 s; dockerd itself comes up in about 1-2 s here.
START_TIMEOUT_S = 60
# One `docker info` must not hang the wait on a daemon that accepts but never answers.
_PROBE_TIMEOUT_S = 5
_LOG_TAIL_LINES = 30  # enough to hold dockerd's own reason for giving up


def uses_docker(conf: Any) -> bool:
    """Whether the job's (group's) configuration asks for Docker-in-Docker."""
    return bool(getattr(conf, "docker", False))


def data_volume(conf: Any) -> dict[str, Any] | None:
    """The emptyDir for Docker's data root; None when the run mounts a volume there."""
    mounts = getattr(conf, "volumes", None) or []
    if any(m.path.rstrip("/") == DATA_ROOT for m in mounts):
        return None
    return {"name": "berth-docker", "emptyDir": {}}


def start_lines() -> list[str]:
    """Shell lines that start dockerd and wait (bounded) until it answers.

    A daemon that exits or stays silent fails the run with its log's tail and the
    reason, before any command runs; a user's command would otherwise fail later
    with "Cannot connect to the Docker daemon", which says nothing of why.
    """
    fail = "berth: docker: true, but dockerd"
    return [
        "berth_dockerd() {",
        "  command -v dockerd >/dev/null ||",
        f"    {{ echo '{fail} is not in this image' >&2; return 1; }}",
        # cgroup v2 (dstack's and moby's dind recipe): dockerd enables controllers for
        # its containers' cgroups, which a cgroup that holds processes cannot; move the
        # container's processes to a child first. cgroup v1 needs nothing.
        "  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then",
        "    mkdir -p /sys/fs/cgroup/berth &&",
        "      xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/berth/cgroup.procs ||"
        " true",
        "  fi",
        f"  mkdir -p {DATA_ROOT}",
        f"  dockerd --data-root {DATA_ROOT} > {DOCKERD_LOG} 2>&1 &",
        "  berth_dockerd_pid=$!",
        f"  berth_until=$(( $(date +%s) + {START_TIMEOUT_S} ))",
        f"  until timeout {_PROBE_TIMEOUT_S} docker info >/dev/null 2>&1; do",
        '    if ! kill -0 "$berth_dockerd_pid" 2>/dev/null; then',
        f"      echo '{fail} exited; the end of {DOCKERD_LOG}:' >&2",
        f"      tail -n {_LOG_TAIL_LINES} {DOCKERD_LOG} >&2; return 1",
        '    elif [ "$(date +%s)" -ge "$berth_until" ]; then',
        f"      echo '{fail} did not answer within {START_TIMEOUT_S} s; the end of"
        f" {DOCKERD_LOG}:' >&2",
        f"      tail -n {_LOG_TAIL_LINES} {DOCKERD_LOG} >&2; return 1",
        "    fi",
        "    sleep 1",
        "  done",
        "}",
        "berth_dockerd || exit 1",
    ]
