"""What Berth stores: users, projects, runs, jobs, fleets and volumes.

These models are read back from Redis, so they ignore unknown fields (an
older reader survives a newer writer). What users send is validated by the
``extra="forbid"`` models in ``shared.configuration`` instead.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Stored(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(Stored):
    name: str
    token_sha256: str
    """Tokens are stored hashed; the plain token is shown once, at creation."""
    ssh_public_key: str | None = None
    is_admin: bool = False


class Project(Stored):
    name: str
    members: list[str] = []
    created_at: float = Field(default_factory=time.time)


class RunStatus(StrEnum):
    SUBMITTED = "submitted"
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED


JobStatus = RunStatus  # jobs move through the same states as runs

FINISHED = frozenset({RunStatus.TERMINATED, RunStatus.DONE, RunStatus.FAILED})


class Placement(Stored):
    """Where the scheduler put a job: the node and the GPUs it reserved there."""

    node: str
    gpu_resource: str | None = None
    gpu_model: str | None = None
    """The model quotas count it as (``shared.queueing.share.gpu_model``), kept so a
    placement in another cluster counts without that cluster's nodes; None before."""
    gpus: int = 0
    cpu_milli: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    """Ephemeral storage, reserved only when the configuration sets ``disk``."""
    joined_at: float | None = None
    """For a placement on an autoscaler pool: when the pool's new node joined."""
    cluster: str | None = None
    """The name of the project's cluster holding ``node`` (``shared.clusters``); None: its
    first (every placement made before a project could have several)."""


class Job(Stored):
    id: str
    run_id: str
    project: str
    run_name: str
    job_num: int = 0
    """Rank within a multi-node task (0 is the master)."""
    replica_num: int = 0
    jobs_in_run: int = 1
    group: str | None = None
    """The node group (a task's) or replica group (a service's) the job runs, whose
    commands, ports and image it gets (``shared.configuration.groups``); None: no groups."""
    status: JobStatus = RunStatus.SUBMITTED
    reason: str = ""
    placement: Placement | None = None
    pod_name: str | None = None
    ssh_secret: str | None = None
    """The Secret holding the pod's sshd host key (shared by the project's pods with the
    same keys, ``workers/ssh_secret.py``); None: the pod's own, named like it (records
    older than the field), or no sshd."""
    pod_ip: str | None = None
    exit_code: int | None = None
    ready: bool | None = None
    """For a running service replica with ``probes``: whether its readiness probe passes,
    so the proxy may send it requests. None: not probed (ready while running)."""
    retired: bool = False
    """A service replica taken out by ``scaling``: it is stopped and no longer counts
    toward its run's status (``shared.state.jobs.refresh_run``), nor is it retried."""
    attempt: int = 1
    """Which pod of the job this is: 1, then one more each time the job goes back to the
    queue (a ``retry``, a pod lost before it started). Its pod carries it as a label, so
    the log collector keeps each attempt's output apart."""
    created: dict[str, str] = {}
    """The objects provisioning made for attempt ``created_attempt`` of the job alone (not
    the run's shared ones): ``"<kind>/<name>"`` -> uid. Teardown deletes exactly these,
    by name with the uid as precondition, instead of listing by label."""
    created_attempt: int = 0
    """The attempt ``created`` belongs to; 0 (records older than the field): unknown."""
    scheduler_binds: bool = False
    """Set once a node's kubelet refused a pod of the job: its later pods are bound by
    the kube-scheduler, which sees the node as the kubelet does, not by Berth
    (``workers/podspec.py``), so a node Berth's inventory misjudges is not tried again
    and again."""
    version: int = 0
    submitted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class Run(Stored):
    id: str
    project: str
    name: str
    user: str
    configuration: dict[str, Any]
    """The validated configuration as JSON (``model_dump(mode="json")``)."""
    configuration_type: str
    status: RunStatus = RunStatus.SUBMITTED
    reason: str = ""
    job_ids: list[str] = []
    priority: int = 0
    stop_requested: bool = False
    abort: bool = False
    version: int = 0
    submitted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    pod_security: Literal["privileged", "baseline", "restricted"] = "privileged"
    """The Pod Security level decided at submission (``shared.policy.pod_security``): its pods
    are built for it and ``berth attach`` logs in as its user. Runs recorded before the
    field existed read as ``privileged``, as they were built."""
    scaled_at: float | None = None
    """When ``scaling`` last changed the service's replica count (``workers.service_scaling``)."""
    code: str | None = None
    """sha256 of the run's code archive (``repos``, ``files``), kept by :mod:`shared.state.code`."""

    def repeats(self, other: Run) -> bool:
        """Whether this is ``other`` submitted again: same user, configuration and code."""
        return (self.user, self.configuration, self.code) == (
            other.user,
            other.configuration,
            other.code,
        )


class Fleet(Stored):
    name: str
    project: str
    configuration: dict[str, Any]
    created_at: float = Field(default_factory=time.time)


class Volume(Stored):
    """A project's named volume: the PersistentVolumeClaim runs mount by ``name``."""

    name: str
    project: str
    user: str = ""
    configuration: dict[str, Any]
    claim_name: str
    """The claim in the project's namespace: registered (``claim_name``) or Berth's own."""
    created_by_berth: bool = False
    """Berth made the claim (``size``), so deleting the volume deletes it too."""
    created_at: float = Field(default_factory=time.time)


class Event(Stored):
    """One line of a run's append-only event log."""

    at: float
    kind: str
    """``status`` for transitions; ``info`` for anything else worth showing."""
    message: str
    status: str | None = None
    job: int | None = None
