"""What a pod's status means for its job: a pure function of the pod.

The pod is read as the API's JSON (:mod:`shared.kube.raw`): the proxy worker judges
every job pod event it applies, and building a ``V1Pod`` for each cost it about
0.75 ms. A client object (a test's, a one-off read) is converted first.

Reasons are the ones a user can act on: image pull errors, OOMKilled, exit
codes, evictions, node loss, and "unschedulable" or refused by the node's
kubelet (the job goes back to the queue instead of failing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.kube.raw import Raw, as_raw, dig, timestamp_of
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


_ADMISSION_REFUSALS = frozenset(
    {
        # The kubelet's admission, for a pod bound to its node that it cannot start
        # there (OutOf<resource> besides): what it judged, all before any container.
        "NodeAffinity",
        "NodeName",
        "NodePorts",
        "TaintToleration",
        "InvalidNodeInfo",
        "UnexpectedAdmissionError",  # a device plugin could not allocate (GPUs gone)
        "TopologyAffinityError",
        "NodeShutdown",
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
    refused: bool = False
    """The node's kubelet refused the pod before starting it (its admission): the job
    goes back to the queue, and the kube-scheduler binds its next pod."""


def judge_pod(pod: Any, *, job: Job, stop_requested: bool, now: float) -> PodVerdict | None:
    """The job state the pod (its JSON or a ``V1Pod``; None: gone) shows, or None when
    nothing changed yet."""
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
    raw = as_raw(pod)
    status = dig(raw, "status") or {}
    phase = status.get("phase")
    if phase == "Running":
        return PodVerdict(RunStatus.RUNNING, "", pod_ip=status.get("podIP"), ready=_ready(raw))
    if phase == "Succeeded":
        return PodVerdict(RunStatus.DONE, "", pod_ip=status.get("podIP"), exit_code=0)
    if phase == "Failed":
        # Only a pod not yet seen running can have been refused: a running job cannot go
        # back to the queue (its failure is an interruption, retried as such).
        return _failed(raw, placed=job.status == RunStatus.PROVISIONING)
    if phase == "Pending":
        return _pending(raw, now)
    return None


def _failed(raw: Raw, *, placed: bool) -> PodVerdict:
    status = dig(raw, "status") or {}
    pod_ip = status.get("podIP")
    term = _terminated(raw)
    if term is not None:
        code = term.get("exitCode")
        why = term.get("reason") or "Error"
        if why == "OOMKilled":
            reason = f"out of memory (OOMKilled, exit code {code})"
        else:
            reason = f"exit code {code}" + (f" ({why})" if why not in ("Error", "") else "")
        return PodVerdict(
            RunStatus.FAILED, reason, pod_ip=pod_ip, exit_code=code, retry_event=ERROR
        )
    why = status.get("reason") or "Failed"
    message = f": {status['message']}" if status.get("message") else ""
    if placed and (why.startswith("OutOf") or why in _ADMISSION_REFUSALS):
        return PodVerdict(
            RunStatus.PENDING, f"the node's kubelet refused the pod ({why}){message}", refused=True
        )
    label = {"Evicted": "evicted", "NodeLost": "node lost", "Shutdown": "node shut down"}.get(
        why, why
    )
    return PodVerdict(
        RunStatus.FAILED, f"{label}{message}", pod_ip=pod_ip, retry_event=INTERRUPTION
    )


def _pending(raw: Raw, now: float) -> PodVerdict | None:
    for cs in dig(raw, "status", "containerStatuses") or ():
        waiting = dig(cs, "state", "waiting")
        if waiting and waiting.get("reason") in _IMAGE_ERRORS:
            what = waiting.get("message") or cs.get("image")
            return PodVerdict(RunStatus.FAILED, f"image pull failed ({waiting['reason']}): {what}")
    for cond in dig(raw, "status", "conditions") or ():
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            since = (
                timestamp_of(cond.get("lastTransitionTime"))
                or timestamp_of(dig(raw, "metadata", "creationTimestamp"))
                or now
            )
            if now - since >= UNSCHEDULABLE_GRACE_S:
                return PodVerdict(
                    RunStatus.PENDING, f"unschedulable: {cond.get('message') or 'no node fits'}"
                )
    return None


def _ready(raw: Raw) -> bool | None:
    """The pod's Ready condition, when its main container is probed; else None."""
    containers = dig(raw, "spec", "containers") or ()
    probed = any(
        c.get("name") == "main" and c.get("readinessProbe") is not None for c in containers
    )
    if not probed:
        return None
    conditions = dig(raw, "status", "conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _terminated(raw: Raw) -> Raw | None:
    for cs in dig(raw, "status", "containerStatuses") or ():
        if cs.get("name") == "main":
            terminated = dig(cs, "state", "terminated")
            if terminated is not None:
                return terminated  # type: ignore[no-any-return]
    return None
