"""The SSH jump host in front of each cluster, kept by the proxy worker.

What runs on the cluster (``workers.jumphost_objects``): per cluster, namespace
and NodePort, a Secret (``authorized_keys`` with the members' keys and
Berth's, each limited to port forwarding; the host key Berth generated;
``sshd_config``), a Deployment of one sshd pod mounting it, and a NodePort
Service whose ``nodePort`` is ``proxy_jump.port``.

This module is the loop, one asyncio task per jump host on a loop in its own
thread of the proxy worker, each under a guard that logs and restarts it:

* every ``ssh.keys_interval_s``, the members' keys are compared with what was
  last applied, and a change is applied (``workers.jumphost_kube``) at once;
* every ``ssh.health_interval_s``, the objects are reconciled (whatever is
  missing is recreated) and Berth logs in over SSH with its own key,
  accepting only the pinned host key.

The result, with a reason, goes to the ``jump-hosts`` blob, which ``GET
/api/status`` (``berth status``) shows, ``GET /health`` counts, and the API's
tunnels and ``berth attach`` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncssh

from shared import ssh
from shared.clusters import ClusterRegistry
from shared.configuration.server import ServerConfig
from shared.errors import BerthError, KubeForbidden, StoreError
from shared.policy import pod_security
from shared.settings import SshSettings
from shared.ssh import JumpHostRecord
from shared.state.store import Store
from workers.jumphost_kube import reconcile, secret_host_key
from workers.jumphost_objects import (
    JumpHostTarget,
    authorized_keys,
    jump_host_targets,
    jump_objects,
    jump_user,
)

log = logging.getLogger(__name__)

_RESTART_DELAY_S = 5.0  # after an unexpected failure of a keeper task
# After a 403 (a Role without the grant, or revoked): RBAC does not change by itself,
# so the jump host's objects are asked for again this rarely, never in a loop.
_FORBIDDEN_RETRY_S = 300.0


async def check_login(
    record: JumpHostRecord, *, client_key: asyncssh.SSHKey, timeout: float
) -> float:
    """Log in to the jump host as Berth; the milliseconds it took, or SSHError."""
    assert record.port is not None
    start = time.perf_counter()
    conn = await ssh.connect(
        record.hostname,
        record.port,
        username=record.user,
        client_key=client_key,
        host_key=record.host_key,
        timeout=timeout,
    )
    conn.close()
    await conn.wait_closed()
    return (time.perf_counter() - start) * 1000


class JumpHostSupervisor:
    """Keeps every jump host, on an asyncio loop in its own thread of the proxy worker."""

    def __init__(
        self,
        ssh_settings: SshSettings,
        server: ServerConfig,
        clusters: ClusterRegistry,
        store: Store,
    ) -> None:
        self.settings = ssh_settings
        self.server = server
        self.clusters = clusters
        self.store = store
        self.records: dict[str, JumpHostRecord] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._publish_lock: asyncio.Lock | None = None

    def start(self) -> None:
        # asyncssh logs every connection at INFO: one per health check would bury the log.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._thread_main, name="jump-hosts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        while not self._stop.is_set():
            try:
                asyncio.run(self._main())
            except Exception:
                log.exception("the jump host supervisor failed; restarting it")
            else:
                if not self._stop.is_set():
                    log.error("the jump host supervisor ended unexpectedly; restarting it")
            self._stop.wait(_RESTART_DELAY_S)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        if self._stop.is_set():
            return
        berth_key = await asyncio.to_thread(ssh.berth_key, self.store, self.settings.key_file)
        keepers = [_Keeper(self, t, berth_key) for t in jump_host_targets(self.server)]
        self.records = {}
        await self.publish()  # forget jump hosts the config no longer names
        tasks = [
            asyncio.create_task(_guarded(f"jump host {kp.target.id}", kp.run, stopping))
            for kp in keepers
        ]
        try:
            await stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def publish(self) -> None:
        assert self._publish_lock is not None
        async with self._publish_lock:  # snapshots reach Redis in the order they were taken
            blob = {k: r.model_dump(mode="json") for k, r in self.records.items()}
            await asyncio.to_thread(self.store.put_blob, ssh.JUMP_HOSTS_BLOB, blob)


@dataclass
class _Keeper:
    """One jump host's loop: keys every few seconds, reconcile and health less often."""

    supervisor: JumpHostSupervisor
    target: JumpHostTarget
    berth_key: asyncssh.SSHKey
    applied_keys: str | None = None
    host_key: str | None = None
    """Private, as stored in Redis; its public half is what everyone pins."""
    port: int | None = None
    repaired: list[str] = field(default_factory=list)
    pod_security: pod_security.Level | None = None
    """The level in force at the last reconcile (the target's, or the namespace's label)."""

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self.supervisor.settings
        next_health = 0.0
        while not stopping.is_set():
            try:
                members = await asyncio.to_thread(
                    ssh.member_keys, self.supervisor.store, self.target.projects
                )
            except StoreError as e:  # Redis away: the jump host keeps its current keys
                log.warning("jump host %s: cannot read the members' keys: %s", self.target.id, e)
                await _wait(stopping, settings.health_interval_s)
                continue
            keys = authorized_keys(members, ssh.public_key_text(self.berth_key))
            due = time.monotonic() >= next_health
            if due or keys != self.applied_keys:
                forbidden = await self._tick(keys, members, check=due)
                if due or forbidden:
                    # A refused grant stays refused until an operator acts: no 403 loop.
                    wait = _FORBIDDEN_RETRY_S if forbidden else settings.health_interval_s
                    next_health = time.monotonic() + wait
            await _wait(stopping, settings.keys_interval_s)

    async def _tick(self, keys: str, members: dict[str, str], *, check: bool) -> bool:
        """One reconcile (and health check); True when the apiserver refused it (403)."""
        record = self._record(members)
        forbidden = False
        try:
            await asyncio.to_thread(self._reconcile, keys)
        except BerthError as e:
            record.status, record.reason = "error", e.message
            record.checked_at = time.time()
            forbidden = isinstance(e, KubeForbidden)
        else:
            record.port = self.port
            record.user = self._user()
            record.host_key = ssh.public_key_text(self.host_key) if self.host_key else ""
            if check:
                await self._check(record)
        finally:
            # Also after a failure: a refused object is retried at the next health
            # interval (or on the next key change), not every keys interval.
            self.applied_keys = keys
        record.repaired = self.repaired
        self._log_transition(record)
        self.supervisor.records[self.target.id] = record
        try:
            await self.supervisor.publish()
        except StoreError as e:  # Redis away: the next tick publishes again
            log.warning("jump host %s: cannot publish its health: %s", self.target.id, e)
        return forbidden

    def _reconcile(self, keys: str) -> None:
        target = self.target
        cluster = self.supervisor.clusters.for_project(target.projects[0], target.cluster)
        k = cluster.kube
        if self.host_key is None:
            self.host_key = ssh.jump_host_key(
                self.supervisor.store, self.target.id, adopt=secret_host_key(k, self.target)
            )
        # Read at every reconcile: relabelling the namespace rebuilds the pod to match.
        self.pod_security = pod_security.level_for(
            k, self.target.namespace, configured=self.target.pod_security
        ).level
        objects = jump_objects(
            self.target,
            image=self.supervisor.settings.jump_image,
            keys=keys,
            host_key=self.host_key,
            pod_security=self.pod_security,
        )
        self.repaired = []  # a reconcile that fails halfway reports no stale repairs
        self.port, self.repaired = reconcile(k, self.target.namespace, objects)

    async def _check(self, record: JumpHostRecord) -> None:
        if record.port is None:
            record.status, record.reason = "error", "Kubernetes has not assigned a NodePort yet"
            return
        try:
            record.latency_ms = await check_login(
                record,
                client_key=self.berth_key,
                timeout=self.supervisor.settings.connect_timeout_s,
            )
        except BerthError as e:
            record.status, record.reason = "error", f"SSH login failed: {e}"
            record.latency_ms = None
        else:
            record.status, record.reason = "ok", ""
        record.checked_at = time.time()

    def _record(self, members: dict[str, str]) -> JumpHostRecord:
        previous = self.supervisor.records.get(self.target.id)
        record = JumpHostRecord(
            id=self.target.id,
            name=self.target.name,
            namespace=self.target.namespace,
            cluster=self.target.cluster_key,
            cluster_name=self.target.cluster,
            projects=list(self.target.projects),
            hostname=self.target.hostname,
            port=self.port if self.port is not None else self.target.port,
            user=self._user(),
            host_key=ssh.public_key_text(self.host_key) if self.host_key else "",
            authorized_users=sorted(members),
        )
        if previous is not None:  # keep the last health verdict between checks
            record.status, record.reason = previous.status, previous.reason
            record.checked_at, record.latency_ms = previous.checked_at, previous.latency_ms
        return record

    def _user(self) -> str:
        level = self.pod_security or self.target.pod_security
        return jump_user(level, default=self.supervisor.settings.jump_user)

    def _log_transition(self, record: JumpHostRecord) -> None:
        previous = self.supervisor.records.get(self.target.id)
        if self.repaired:
            log.warning("jump host %s: %s", self.target.id, "; ".join(self.repaired))
        if previous is None or (previous.status, previous.reason) != (record.status, record.reason):
            level = logging.INFO if record.status != "error" else logging.WARNING
            why = f": {record.reason}" if record.reason else ""
            log.log(level, "jump host %s is %s%s", self.target.id, record.status, why)


async def _guarded(
    what: str, run: Callable[[asyncio.Event], Awaitable[None]], stopping: asyncio.Event
) -> None:
    """Run ``run`` until ``stopping``; log and restart it after any failure or early end."""
    while not stopping.is_set():
        try:
            await run(stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.0f s", what, _RESTART_DELAY_S)
        else:
            if not stopping.is_set():
                log.error("%s ended unexpectedly; restarting it", what)
        await _wait(stopping, _RESTART_DELAY_S)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
