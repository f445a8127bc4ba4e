"""What a pod's status means for its job: a pure function of the V1Pod.

Reasons are the ones a user can act on: image pull errors, OOMKilled, exit
codes, evictions, node loss, and "unschedulable" (the job goes back to the
queue instead of failing).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.queueing.limits import ERROR, INTERRUPTION
from shared.state.records import Job, RunStatus

UNSCHEDULABLE_GRACE_S = 60.0
"""How long a pod may sit unschedulable before its job returns to the queue;
the scheduler often binds in well under a second, but preemption takes longer."""

_IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    }
)


@dataclass(frozen=True)
class PodVerdict:
    status: RunStatus
    reason: str = ""
    pod_ip: str | None = None
    exit_code: int | None = None
    ready: bool | None = None
    """For a running pod whose container has a readiness probe (a service's ``probes``):
    whether it passes now; None when nothing is probed (ready while running)."""
    retry_event: str | None = None
    """For a failure, the ``retry.on_events`` kind it is: ``error`` (non-zero exit) or
    ``interruption`` (pod gone, evicted, node lost); None when retrying cannot help."""


def judge_pod(pod: Any, *, job: Job, stop_requested: bool, now: float) -> PodVerdict | None:
    """The job state the pod shows, or None when nothing changed yet."""
    if pod is None:
        if job.pod_name is None:
            return None
        if stop_requested:
            return PodVerdict(RunStatus.TERMINATED, "stopped")
        return PodVerdict(
            RunStatus.FAILED,
            "the pod was deleted outside Berth (node lost or evicted)",
            retry_event=INTERRUPTION,
        )
    status = pod.status
    phase = status.phase if status else None
    if phase == "Running":
        return PodVerdict(RunStatus.RUNNING, "", pod_ip=status.pod_ip, ready=_ready(pod))
    if phase == "Succeeded":
        return PodVerdict(RunStatus.DONE, "", pod_ip=status.pod_ip, exit_code=0)
    if phase == "Failed":
        return _failed(pod)
    if phase == "Pending":
        return _pending(pod, now)
    return None


def _failed(pod: Any) -> PodVerdict:
    status = pod.status
    term = _terminated(pod)
    if term is not None:
        code = term.exit_code
        why = term.reason or "Error"
        if why == "OOMKilled":
            reason = f"out of memory (OOMKilled, exit code {code})"
        else:
            reason = f"exit code {code}" + (f" ({why})" if why not in ("Error", "") else "")
        return PodVerdict(
            RunStatus.FAILED, reason, pod_ip=status.pod_ip, exit_code=code, retry_event=ERROR
        )
    why = status.reason or "Failed"
    message = f": {status.message}" if status.message else ""
    label = {"Evicted": "evicted", "NodeLost": "node lost", "Shutdown": "node shut down"}.get(
        why, why
    )
    return PodVerdict(
        RunStatus.FAILED, f"{label}{message}", pod_ip=status.pod_ip, retry_event=INTERRUPTION
    )


def _pending(pod: Any, now: float) -> PodVerdict | None:
    status = pod.status
    for cs in status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in _IMAGE_ERRORS:
            return PodVerdict(
                RunStatus.FAILED,
                f"image pull failed ({waiting.reason}): {waiting.message or cs.image}",
            )
    for cond in status.conditions or []:
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            since = _ts(cond.last_transition_time) or _ts(pod.metadata.creation_timestamp) or now
            if now - since >= UNSCHEDULABLE_GRACE_S:
                return PodVerdict(
                    RunStatus.PENDING, f"unschedulable: {cond.message or 'no node fits'}"
                )
    return None


def _ready(pod: Any) -> bool | None:
    """The pod's Ready condition, when its main container is probed; else None."""
    containers = pod.spec.containers if pod.spec else []
    probed = any(c.name == "main" and c.readiness_probe is not None for c in containers or [])
    if not probed:
        return None
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _terminated(pod: Any) -> Any:
    for cs in pod.status.container_statuses or []:
        if cs.name == "main" and cs.state is not None and cs.state.terminated is not None:
            return cs.state.terminated
    return None


def _ts(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return None
