"""The proxy worker's pod follower: the latest state per job, one thread per job at a time."""

from __future__ import annotations

import threading
from typing import Any, cast

from tests.polling import wait_until
from workers.context import WorkerContext
from workers.pod_follow import PodFollower


class _Recorder:
    """An apply that blocks on demand and records what it applied, and overlaps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: list[tuple[str, Any, bool]] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, job_id: str, pod: Any, deleted: bool) -> None:
        with self.lock:
            if job_id in self.running:
                self.overlaps += 1
            self.running.add(job_id)
        self.gate.wait(10)
        with self.lock:
            self.applied.append((job_id, pod, deleted))
            self.running.discard(job_id)


def _follower(apply: _Recorder, threads: int = 4) -> PodFollower:
    # The context is only used to send a sync_job when an apply fails; none does here.
    return PodFollower(cast(WorkerContext, None), threads=threads, apply=apply)


def test_events_for_one_job_while_it_is_applied_collapse_into_its_latest_state() -> None:
    rec = _Recorder()
    follower = _follower(rec)
    follower.start()
    try:
        rec.gate.clear()
        follower.offer("j1", "ADDED", "pod-v1")
        wait_until(lambda: "j1" in rec.running, timeout=5, what="the first apply")
        for version in range(2, 10):
            follower.offer("j1", "MODIFIED", f"pod-v{version}")
        follower.offer("j1", "DELETED", "pod-v10")
        rec.gate.set()
        wait_until(lambda: follower.pending() == 0, timeout=5, what="all applied")
    finally:
        follower.stop()
    assert rec.applied == [("j1", "pod-v1", False), ("j1", "pod-v10", True)]
    assert rec.overlaps == 0


def test_many_jobs_are_applied_side_by_side_each_in_its_own_order() -> None:
    rec = _Recorder()
    follower = _follower(rec, threads=3)
    follower.start()
    try:
        for version in range(20):
            for job in ("a", "b", "c", "d", "e"):
                follower.offer(job, "MODIFIED", version)
        follower.offer("gone", "DELETED", None)
        wait_until(lambda: follower.pending() == 0, timeout=10, what="all applied")
    finally:
        follower.stop()
    assert rec.overlaps == 0
    for job in ("a", "b", "c", "d", "e"):
        seen = [pod for j, pod, _ in rec.applied if j == job]
        assert seen == sorted(seen) and seen[-1] == 19  # in order, ending at the latest
    assert ("gone", None, True) in rec.applied
