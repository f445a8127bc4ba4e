"""Multi-node tasks: which nodes start first (``startup_order``) and when the task
is over (``stop_criteria``), as pure functions of the jobs' states.

**Design: the order is kept by when pods are created.** A job whose turn has not
come gets no pod yet; its provisioning waits (a TemporaryError, retried with
backoff) until the nodes it follows are Running, and each job that turns Running
wakes the ones waiting on it. So with ``workers-first`` the workers' pods (and
their sshd, for ``mpirun``) run before rank 0's pod exists, and with
``master-first`` rank 0 runs before any worker is created. Every node's commands
still start once all peers have an address (``DSTACK_NODES_IPS``), as before.

``master-done`` ends the task when rank 0 exits with 0: the other nodes are
stopped and recorded as done, with :data:`MASTER_DONE_REASON`.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.state.records import Job, RunStatus

MASTER_DONE_REASON = "stop_criteria master-done: the master node (rank 0) finished"
_NOT_STARTED = frozenset({RunStatus.SUBMITTED, RunStatus.PENDING, RunStatus.PROVISIONING})


def waiting_for(order: str, job: Job, replica: Iterable[Job]) -> str | None:
    """Why ``job`` may not get its pod yet under ``order``, or None when it may.

    ``replica`` holds the jobs of ``job``'s replica (ranks 0..n-1), ``job`` among them.
    """
    if order == "master-first" and job.job_num > 0:
        firsts = [j for j in replica if j.job_num == 0]
        what = "the master node (rank 0)"
    elif order == "workers-first" and job.job_num == 0:
        firsts = [j for j in replica if j.job_num > 0]
        what = "the worker nodes"
    else:
        return None
    if any(j.status in _NOT_STARTED for j in firsts):
        return f"startup_order {order}: waiting for {what} to run"
    return None


def follows(order: str, job: Job) -> bool:
    """True when jobs of ``job``'s rank wait for ``job`` under ``order``."""
    if order == "master-first":
        return job.job_num == 0
    if order == "workers-first":
        return job.job_num > 0
    return False


def stops_the_others(criteria: str, job: Job) -> bool:
    """True when ``job`` finishing with success ends its whole task."""
    return criteria == "master-done" and job.job_num == 0 and job.jobs_in_run > 1
