"""What a follower reads: one pod attempt's run container."""

from __future__ import annotations

from dataclasses import dataclass

from shared import kube

CONTAINER = "main"
"""The run's own container (workers/podspec.py); init containers are Berth's."""


@dataclass(frozen=True)
class Target:
    """The pod attempt a follower reads."""

    kube: kube.Kube
    namespace: str
    pod: str
    uid: str
    job_id: str
    attempt: int
