"""Request and response models of the HTTP API, one per direction."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.ssh import JumpHostRecord
from shared.state.records import Job, Run, RunStatus


class RunCreate(BaseModel):
    """``POST /api/projects/{p}/runs``: a configuration as YAML text or as an object."""

    model_config = ConfigDict(extra="forbid")
    configuration: str | dict[str, Any] = Field(
        description="The dstack-format configuration, as YAML text or as a JSON object."
    )
    code: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The sha256 POST /code answered: the archive of the run's repos and files.",
    )


class RunStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    abort: bool = False
    """Abort skips the graceful termination period."""


class JobPublic(BaseModel):
    job_num: int
    replica_num: int
    status: RunStatus
    reason: str
    node: str | None
    cluster: str | None = None
    """The project's name for the cluster the job was placed in (None: not placed, or
    placed before projects could have several: their first)."""
    gpus: int
    pod_name: str | None
    pod_ip: str | None
    exit_code: int | None
    ready: bool | None = None
    """A service replica's readiness probe passes (None: not probed, ready while running)."""
    retired: bool = False
    """A service replica ``scaling`` took out: stopped on purpose, no longer the run's."""
    group: str | None = None
    """The node group (task) or replica group (service) it runs; None without groups."""

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            job_num=job.job_num,
            replica_num=job.replica_num,
            status=job.status,
            reason=job.reason,
            node=job.placement.node if job.placement else None,
            cluster=job.placement.cluster if job.placement else None,
            gpus=job.placement.gpus if job.placement else 0,
            pod_name=job.pod_name,
            pod_ip=job.pod_ip,
            exit_code=job.exit_code,
            ready=job.ready,
            retired=job.retired,
            group=job.group,
        )


class RunPublic(BaseModel):
    id: str
    project: str
    name: str
    user: str
    type: str
    status: RunStatus
    reason: str
    priority: int
    submitted_at: float
    updated_at: float
    configuration: dict[str, Any]
    jobs: list[JobPublic]
    ssh_target: str | None = None
    """``ssh <target>`` works after ``berth attach <run>`` (dev environments and tasks)."""
    ide_url: str | None = None
    """For dev environments: opens the IDE over that SSH target."""
    idle_stop_in_s: float | None = None
    """For a running dev environment with ``inactivity_duration``: seconds until it is
    stopped unless someone has an SSH session in it (listings only)."""

    @classmethod
    def of(cls, run: Run, jobs: list[Job]) -> RunPublic:
        return cls(
            id=run.id,
            project=run.project,
            name=run.name,
            user=run.user,
            type=run.configuration_type,
            status=run.status,
            reason=run.reason,
            priority=run.priority,
            submitted_at=run.submitted_at,
            updated_at=run.updated_at,
            configuration=redact(run.configuration),
            jobs=[JobPublic.of(j) for j in sorted(jobs, key=lambda j: (j.replica_num, j.job_num))],
            ssh_target=run.name if run.configuration_type != "service" else None,
            ide_url=_ide_url(run),
        )


class EventPublic(BaseModel):
    id: str
    at: float
    kind: str
    message: str
    status: str | None
    job: int | None
    source: str = "berth"
    """``berth`` (kept with the run) or ``kubernetes`` (the pods' events, read live)."""


class Health(BaseModel):
    status: str
    redis: str
    jump_hosts: dict[str, int] = {}
    """How many jump hosts are ``ok``, ``error`` or ``pending``; details are in ``/api/status``."""


class BackendAccess(BaseModel):
    """What Berth may do on one project's backend (``shared/policy/access.py``), and why."""

    project: str
    namespace: str
    cluster: str = ""
    """The project's name for the cluster (its kubeconfig context; ``default``)."""
    mode: str
    """``cluster`` (Berth places from the live inventory), ``namespace`` (the
    kube-scheduler places; the namespace's quota is the capacity) or ``none``."""
    reason: str
    checked_at: float | None = None
    unreachable: str | None = None
    """Why its apiserver does not answer, as the proxy worker last found (None: it does);
    runs with another cluster to go to are not placed here meanwhile."""


class Status(BaseModel):
    redis: str
    jump_hosts: list[JumpHostRecord]
    backends: list[BackendAccess] = []


def redact(configuration: dict[str, Any]) -> dict[str, Any]:
    """The configuration as users may see it: registry passwords never leave the server."""
    auth = configuration.get("registry_auth")
    if not isinstance(auth, dict):
        return configuration
    return configuration | {"registry_auth": auth | {"password": "********"}}


_IDE_SCHEMES = {"vscode": "vscode", "cursor": "cursor", "windsurf": "windsurf"}


def _ide_url(run: Run) -> str | None:
    """The editor's remote-SSH link, the form dstack prints for dev environments."""
    if run.configuration_type != "dev-environment":
        return None
    scheme = _IDE_SCHEMES.get(str(run.configuration.get("ide") or "vscode"), "vscode")
    folder = run.configuration.get("working_dir") or "/workflow"
    return f"{scheme}://vscode-remote/ssh-remote+{run.name}{folder}"
