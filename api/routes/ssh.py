"""``GET /api/projects/{p}/runs/{name}/ssh``: what ``berth attach`` writes into an SSH config.

The jump host's address and pinned host key come from the proxy worker's
``jump-hosts`` record; each running job's pod IP from its record, and its host
key from the SSH Secret the job records, where provisioning put the key Berth
generated for the project's pods with those keys. Nothing here is learned by
connecting, so nothing can be spoofed on first use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ClustersDep, CurrentProject, SettingsDep, StoreDep
from shared import ssh
from shared.clusters import ClusterRegistry
from shared.errors import ConflictError, TemporaryError
from shared.policy.pod_security import RESTRICTED_SSH_USER
from shared.settings import SshSettings
from shared.state.records import Job, Project, Run, RunStatus
from shared.state.store import Store

router = APIRouter(prefix="/api/projects/{project}/runs", tags=["ssh"])


class JumpPublic(BaseModel):
    hostname: str
    port: int
    user: str
    host_key: str
    status: str
    reason: str


class NodePublic(BaseModel):
    names: list[str]
    """SSH host aliases: ``<run>`` for a single job; ``<run>-<rank>`` per node (and
    ``<run>`` for rank 0) for multi-node runs; ``<run>-r<replica>-<rank>`` beyond replica 0."""
    job_num: int
    replica_num: int
    pod_ip: str
    port: int
    user: str
    host_key: str | None
    """None for a pod whose Secret holds no Berth host key (made before Berth did)."""


class PortPublic(BaseModel):
    local_port: int | None
    container_port: int


class SshAccess(BaseModel):
    project: str
    run: str
    jump: JumpPublic
    nodes: list[NodePublic]
    ports: list[PortPublic]


@router.get("/{name}/ssh")
def get_ssh_access(
    name: str,
    project: CurrentProject,
    store: StoreDep,
    clusters: ClustersDep,
    settings: SettingsDep,
) -> SshAccess:
    """The jump host, every running node and the run's ports, with pinned host keys."""
    run = store.run_by_name(project.name, name)
    return ssh_access(store, clusters, settings.ssh, project=project, run=run)


def ssh_access(
    store: Store, clusters: ClusterRegistry, settings: SshSettings, *, project: Project, run: Run
) -> SshAccess:
    jobs = [j for j in store.jobs_of(run) if j.status == RunStatus.RUNNING and j.pod_ip]
    # A run keeps to one cluster: its jump host is that cluster's.
    where = clusters.name_of(jobs[0]) if jobs else None
    jump = ssh.jump_host_of(store, project.name, where)
    if jump is None:
        raise ConflictError(
            f"project {project.name!r} has no jump host: an admin must set proxy_jump for its"
            " backend in the server config",
            field="proxy_jump",
        )
    if jump.port is None or not jump.host_key:
        raise TemporaryError(f"the jump host is not ready yet: {jump.reason or jump.status}")
    if not jobs:
        raise ConflictError(
            f"run {run.name!r} is {run.status}; berth attach works once it is running",
            field="name",
        )
    cluster = clusters.for_job(jobs[0])
    # The run's pods share one SSH Secret (workers/ssh_secret.py): one read, not one per node.
    host_keys = {
        name: ssh.pod_host_key(cluster.kube, cluster.namespace, name)
        for name in {job.ssh_secret or job.pod_name for job in jobs}
    }
    nodes = [
        NodePublic(
            names=_aliases(run.name, job, single=len(jobs) == 1),
            job_num=job.job_num,
            replica_num=job.replica_num,
            pod_ip=str(job.pod_ip),
            port=ssh.RUN_SSH_PORT,
            # A restricted pod's sshd runs as (and logs in) its own non-root user.
            user=RESTRICTED_SSH_USER if run.pod_security == "restricted" else settings.run_user,
            host_key=host_keys[job.ssh_secret or job.pod_name],
        )
        for job in sorted(jobs, key=lambda j: (j.replica_num, j.job_num))
    ]
    return SshAccess(
        project=project.name,
        run=run.name,
        jump=JumpPublic(
            hostname=jump.hostname,
            port=jump.port,
            user=jump.user,
            host_key=jump.host_key,
            status=jump.status,
            reason=jump.reason,
        ),
        nodes=nodes,
        ports=_ports(run.configuration),
    )


def _aliases(run: str, job: Job, *, single: bool) -> list[str]:
    if single:
        return [run]
    if job.replica_num > 0:
        return [f"{run}-r{job.replica_num}-{job.job_num}"]
    return [run, f"{run}-0"] if job.job_num == 0 else [f"{run}-{job.job_num}"]


def _ports(configuration: dict[str, Any]) -> list[PortPublic]:
    ports = [PortPublic.model_validate(p) for p in configuration.get("ports") or []]
    service_port = configuration.get("port")
    if isinstance(service_port, int) and all(p.container_port != service_port for p in ports):
        ports.append(PortPublic(local_port=service_port, container_port=service_port))
    return ports
