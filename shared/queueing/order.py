"""Queue order inside a project: priority first, then submission time.

``priority`` is dstack's 0..100, higher first. Equal priority is first come,
first served; equal submission times (same clock tick) fall back to the run id,
so every worker computes the same order from the same records.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.queueing.model import QueuedRun

QueueKey = tuple[int, float, str]


def queue_key(run: QueuedRun) -> QueueKey:
    return run.key


def project_queues(runs: Iterable[QueuedRun]) -> dict[str, list[QueuedRun]]:
    """Each project's waiting runs, in queue order; projects by name."""
    queues: dict[str, list[QueuedRun]] = {}
    for run in runs:
        queues.setdefault(run.project, []).append(run)
    return {project: sorted(queues[project], key=queue_key) for project in sorted(queues)}
