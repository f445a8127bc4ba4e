"""Dev environments' ``inactivity_duration``: a user's SSH session counts as use.

Every ``ssh.activity_interval_s`` the worker logs into each running dev
environment that has an ``inactivity_duration`` (Berth's key, through the jump
host, the pod's pinned host key, as ``berth attach`` would) and counts the
established TCP connections to the pod's sshd port in ``/proc/net/tcp``: every
session, ``ssh RUN``, an IDE's Remote-SSH, a port forward, comes through the
jump host to that port. Its own login is one of them; any more means a user is
connected, and the run's activity is recorded
(:func:`shared.queueing.keys.record_activity`), which the sweep's inactivity
rule counts from. A pod that cannot be reached (SSH off, jump host down) records
nothing: the rule then acts as a time limit, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncssh

from shared import ssh
from shared.errors import BerthError
from shared.policy.pod_security import RESTRICTED_SSH_USER
from shared.queueing import keys
from shared.state.records import Job, Run, RunStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)

_ESTABLISHED = "01"  # /proc/net/tcp's state column
_COMMAND = "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"


def record_ssh_activity(ctx: WorkerContext) -> list[str]:
    """Record activity for every watched dev environment with a user's session; their names."""
    watched = [
        run
        for run in ctx.store.active_runs_of("dev-environment")
        if run.status == RunStatus.RUNNING
        and run.configuration.get("inactivity_duration") not in (None, False, "off")
    ]
    if not watched:
        return []
    targets = [t for run in watched if (t := _target(ctx, run)) is not None]
    key = ssh.berth_key(ctx.store, ctx.settings.ssh.key_file)
    results = asyncio.run(_count_all(targets, key, timeout=ctx.settings.ssh.connect_timeout_s))
    now = time.time()
    active = []
    for (run, *_), sessions in zip(targets, results, strict=True):
        if sessions is not None and sessions > 0:
            keys.record_activity(ctx.store, run.id, now)
            active.append(run.name)
    return active


def count_sessions(proc_net_tcp: str, port: int) -> int:
    """Established connections to local ``port`` in /proc/net/tcp(6) text."""
    count = 0
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or ":" not in fields[1]:
            continue  # the header, or a line cut short
        local_port = fields[1].rsplit(":", 1)[1]
        try:
            if int(local_port, 16) == port and fields[3] == _ESTABLISHED:
                count += 1
        except ValueError:
            continue
    return count


Target = tuple[Run, ssh.JumpHostRecord, Job, str, str]


def _target(ctx: WorkerContext, run: Run) -> Target | None:
    job = next(
        (j for j in ctx.store.jobs_of(run) if j.status == RunStatus.RUNNING and j.pod_ip), None
    )
    if job is None or not job.pod_name:
        return None
    jump = ssh.jump_host_of(ctx.store, run.project, ctx.clusters.name_of(job))
    if jump is None or jump.port is None or not jump.host_key:
        return None
    cluster = ctx.clusters.for_job(job)
    try:
        host_key = ssh.pod_host_key(cluster.kube, cluster.namespace, job.ssh_secret or job.pod_name)
    except BerthError:
        return None
    if host_key is None:
        return None
    user = RESTRICTED_SSH_USER if run.pod_security == "restricted" else ctx.settings.ssh.run_user
    return run, jump, job, host_key, user


async def _count_all(
    targets: list[Target], key: asyncssh.SSHKey, *, timeout: float
) -> list[int | None]:
    return list(await asyncio.gather(*(_count(t, key, timeout=timeout) for t in targets)))


async def _count(target: Target, key: asyncssh.SSHKey, *, timeout: float) -> int | None:
    """Users' sessions in the pod (ours excluded), or None when it cannot be asked."""
    run, jump, job, host_key, user = target
    assert jump.port is not None and job.pod_ip is not None
    try:
        async with asyncio.timeout(4 * timeout):
            via: Any = await ssh.connect(
                jump.hostname,
                jump.port,
                username=jump.user,
                client_key=key,
                host_key=jump.host_key,
                timeout=timeout,
            )
            async with via:
                pod = await ssh.connect(
                    job.pod_ip,
                    ssh.RUN_SSH_PORT,
                    username=user,
                    client_key=key,
                    host_key=host_key,
                    timeout=timeout,
                    tunnel=via,
                )
                async with pod:
                    result = await pod.run(_COMMAND, check=False)
    except (TimeoutError, OSError, asyncssh.Error, BerthError) as e:
        log.info("cannot count the SSH sessions of %s: %s", run.name, e)
        return None
    text = result.stdout if isinstance(result.stdout, str) else ""
    return max(0, count_sessions(text, ssh.RUN_SSH_PORT) - 1)  # minus our own login
