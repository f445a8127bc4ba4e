"""The faults themselves, bounded in count and time, for the tests and ``bench.faults``.

Each takes a :class:`~tests.reliability.world.World` of its own and returns
what it measured; the caller judges the end state with
:func:`~tests.reliability.world.judge`.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from cli.local.processes import ProcessRecord, is_running, log_tail
from shared.errors import BerthError, StoreError
from shared.gpu.inventory import GpuInventory
from shared.state.store import Store
from tests.polling import wait_until
from tests.reliability.world import (
    Burst,
    RunSpec,
    World,
    pick,
    sigkill,
    sigkill_group,
    worker_ready_count,
)
from tests.sentinel import SentinelGroup
from workers.jumphost_objects import LABEL_JUMP
from workers.lease import LEASE_TTL_S


@dataclass
class KillLog:
    kills: int = 0
    restarts: int = 0
    seconds: float = 0.0


def kill_workers(world: World, rng: random.Random, *, kills: int, log: KillLog) -> None:
    """SIGKILL ``kills`` random Celery workers, restarting each at once (same argv and env).

    The next victim is always a worker that said it is ready, so every kill
    lands on a process that was consuming tasks.
    """
    start = time.perf_counter()
    ready = {p.name: worker_ready_count(p) for p in world.workers()}
    for _ in range(kills):
        victim = pick(rng, world.workers())
        wanted = ready[victim.name]

        def consuming(v: ProcessRecord = victim, n: int = wanted) -> bool:
            return worker_ready_count(v) >= n

        wait_until(consuming, timeout=60, what=f"{victim.name} ready before it is killed")
        sigkill(victim)
        log.kills += 1
        restarted = world.stack.restart(victim.name)
        ready[victim.name] = worker_ready_count(restarted) + 1
        log.restarts += 1
    log.seconds += time.perf_counter() - start


@dataclass
class RedisOutage:
    burst: Burst
    accepted_before_kill: int = 0
    down_s: float = 0.0
    """From SIGKILL to the restarted Redis answering PING."""


def kill_redis_mid_burst(world: World, specs: list[RunSpec], *, kill_after: int) -> RedisOutage:
    """Submit ``specs``; after ``kill_after`` 202s SIGKILL Redis and restart it from its AOF."""
    burst = Burst(world.stack, specs, threads=4).start()
    wait_until(lambda: len(burst.accepted) >= kill_after, timeout=60, what="runs accepted")
    outage = RedisOutage(burst=burst, accepted_before_kill=len(burst.accepted))
    start = time.perf_counter()
    sigkill(world.cluster.processes["redis"])
    restarted = world.restart_cluster_process("redis")
    client: redis.Redis[bytes] = redis.Redis.from_url(world.cluster.redis_url, socket_timeout=2)
    try:
        wait_until(lambda: _pings(client), timeout=30, what="Redis back")
    except AssertionError as e:
        # Once seen (1 run in 3): say whether it started, failed to bind, or was loading.
        alive = is_running(restarted)
        raise AssertionError(f"{e}; running: {alive}\n{log_tail(restarted, 40)}") from None
    finally:
        client.close()
    outage.down_s = time.perf_counter() - start
    burst.join(timeout=300)
    return outage


@dataclass
class Failover:
    burst: Burst
    old_primary: int
    """The killed primary's port."""
    new_primary: int = 0
    accepted_before_kill: int = 0
    write_after_s: float = 0.0
    """From SIGKILL to the first write through the Sentinels that replicas acknowledged."""


def kill_primary_mid_burst(
    world: World, group: SentinelGroup, specs: list[RunSpec], *, kill_after: int
) -> Failover:
    """Submit ``specs``; after ``kill_after`` 202s SIGKILL the Sentinel group's primary
    (never restarted: Sentinel promotes a replica). Returns once the burst is over."""
    # A client retrying 503s for up to ~30 s: detection (1 s), election and the
    # promotion take a few seconds, plus redis-py's own reconnect backoff.
    burst = Burst(world.stack, specs, threads=4, retries_on_503=600).start()
    wait_until(lambda: len(burst.accepted) >= kill_after, timeout=120, what="runs accepted")
    old = group.primary()
    failover = Failover(
        burst=burst, old_primary=group.server_ports[group.servers.index(old)],
        accepted_before_kill=len(burst.accepted),
    )  # fmt: skip
    start = time.perf_counter()
    sigkill(old)
    # No retries of its own: the figure is the first moment a write works, not a backoff's.
    store = Store.from_settings(world.stack.settings().redis, timeout_s=2, retries=0)
    try:
        wait_until(lambda: acknowledged_write(store), timeout=60, what="a write after failover")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{group.logs()}") from None
    finally:
        store.close()
    failover.write_after_s = time.perf_counter() - start
    failover.new_primary = group.primary_port() or 0
    burst.join(timeout=600)
    return failover


def acknowledged_write(store: Store) -> bool:
    try:
        store.incr(store.key("failover", "probe"))
        store.confirm_replicated("probe")
    except StoreError:
        return False
    return True


@dataclass
class ReplicaKill:
    burst: Burst
    victims: list[str]
    """The processes SIGKILLed (with their process groups), by name."""
    accepted_before_kill: int = 0
    submissions_before_kill: dict[str, int] = field(default_factory=dict)
    """API process name -> submissions it had answered when the kill came."""
    address_answers: int = 0
    """Of ``ADDRESS_PROBES`` fresh connections to the API's address after the burst,
    how many a health check answered."""
    held: list[str] = field(default_factory=list)
    """Tasks a killed Celery worker had received and not finished (unacknowledged:
    every Berth task acknowledges late), by name."""


ADDRESS_PROBES = 20  # fresh connections, spread by the kernel over the live processes


def kill_mid_burst(
    world: World,
    specs: list[RunSpec],
    *,
    kill_after: int,
    victims: Callable[[dict[str, int]], list[str]],
) -> ReplicaKill:
    """Submit ``specs``; after ``kill_after`` 202s SIGKILL the processes ``victims``
    names (an API process, or every process of one "host"), never restarted. Returns
    once the burst is over. ``victims`` is called at the kill with the burst's
    connections each API process holds (e.g. :func:`busiest_api`).

    The burst holds its next submissions at ``kill_after`` until the victims are
    frozen, so the kill lands mid-burst however fast the API answers (in one CI run
    the burst's last 134 submissions were answered before the freeze). Clients do not
    retry a broken connection: a request in flight on a killed API process counts as
    ``connection`` in ``burst.answers``, never as accepted. The victims are killed
    even if freezing them fails, so a failed test leaves no process stopped behind
    for the next one.
    """
    burst = Burst(world.stack, specs, threads=8, hold_after=kill_after).start()
    try:
        wait_until(lambda: burst.done >= kill_after, timeout=120, what="runs answered")
        port = _port(world)
        kill = ReplicaKill(
            burst=burst,
            victims=victims({p.name: _connections(p.pid, port) for p in _apis(world)}),
            accepted_before_kill=len(burst.accepted),
            submissions_before_kill={p.name: _submissions_answered(p) for p in _apis(world)},
        )
        try:
            for name in kill.victims:
                if name.startswith("worker"):
                    kill.held = _freeze_holding_a_task(world.process(name), burst)
                elif name.startswith("api"):
                    _freeze_with_a_request_unanswered(world.process(name), burst, port=port)
        finally:
            burst.release()
            for name in kill.victims:
                sigkill_group(world.process(name))
    finally:
        burst.release()
    burst.join(timeout=600)
    kill.address_answers = sum(_health_answers(world.stack.url) for _ in range(ADDRESS_PROBES))
    return kill


def proxy_leader(world: World) -> str:
    """The name of the proxy worker holding the lease ("<host>:<pid>:<random>")."""
    store = world.ctx.store
    holder = wait_until(
        lambda: store.r.get(store.key("lease", "proxy-worker")),
        timeout=LEASE_TTL_S + 30,
        what="a proxy worker leading",
    )
    pid = int(holder.decode().split(":")[1])
    return next((p.name for p in world.stack.processes if p.pid == pid), "")


def _freeze_holding_a_task(worker: ProcessRecord, burst: Burst) -> list[str]:
    """SIGSTOP the worker's process group at a moment it holds a task it received and
    has not finished (its log says so), and leave it stopped for the SIGKILL: a host
    lost mid-task, not between tasks. The held burst goes on meanwhile (its runs give
    the worker tasks). Returns the held tasks' names."""
    burst.release()

    def caught() -> list[str]:
        os.killpg(worker.pid, signal.SIGSTOP)
        wait_until(lambda: _all_stopped(worker.pid), timeout=10, what=f"{worker.name} stopped")
        held = unfinished_tasks(Path(worker.log).read_text(errors="replace"))
        if not held:
            os.killpg(worker.pid, signal.SIGCONT)
        return held

    return wait_until(caught, timeout=120, what=f"{worker.name} caught holding a task")


def _freeze_with_a_request_unanswered(api: ProcessRecord, burst: Burst, *, port: int) -> None:
    """SIGSTOP the API process's group, then let the held burst go, and leave the
    process stopped for the SIGKILL once a client's request sits unanswered on one of
    its connections (bytes it has not read), or a connection waits to be accepted, so
    the kill lands with a request in flight. Every burst client sends its next request
    at the release, over the connection it keeps: one on this process is enough."""
    os.killpg(api.pid, signal.SIGSTOP)
    wait_until(lambda: _all_stopped(api.pid), timeout=10, what=f"{api.name} stopped")
    burst.release()
    # Below httpx's 30 s read timeout, so the waiting client is still there at the kill.
    wait_until(lambda: _unread_bytes(api.pid, port), timeout=20, what=f"a request to {api.name}")


def _port(world: World) -> int:
    port = httpx.URL(world.stack.url).port
    assert port is not None
    return port


def _unread_bytes(pid: int, port: int) -> int:
    """Bytes waiting unread on the TCP connections ``pid`` holds on local ``port``, plus
    connections waiting in its accept queue there (a client's request follows them).
    Its other connections (Redis) are left out."""
    # st 01 ESTABLISHED: rx_queue is bytes unread; st 0A LISTEN: connections not yet
    # accepted. tx_queue:rx_queue in hex.
    return sum(
        int(cols[4].split(":")[1], 16) for cols in _sockets(pid, port) if cols[3] in ("01", "0A")
    )


def _connections(pid: int, port: int) -> int:
    """Established connections ``pid`` holds on local ``port`` (its clients')."""
    return sum(1 for cols in _sockets(pid, port) if cols[3] == "01")


def _sockets(pid: int, port: int) -> list[list[str]]:
    """The rows of /proc/net/tcp{,6} for the sockets ``pid`` holds on local ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            # The socket's inode is column 9; the local address:port (hex) column 1.
            if cols[9] in inodes and int(cols[1].rsplit(":", 1)[1], 16) == port:
                rows.append(cols)
    return rows


def unfinished_tasks(log: str) -> list[str]:
    """Names of the tasks a Celery worker's log shows received and not yet finished."""
    received = {task_id: name for name, task_id in _TASK_RECEIVED.findall(log)}
    for task_id in _TASK_FINISHED.findall(log):
        received.pop(task_id, None)
    return sorted(received.values())


# Celery's own lines: "Task <name>[<id>] received", "... succeeded in ...",
# "... raised unexpected: ...", "... retry: ..." (a retry is a new message, same id).
_TASK_RECEIVED = re.compile(r"Task (\S+)\[([0-9a-f-]+)\] received")
_TASK_FINISHED = re.compile(r"Task \S+\[([0-9a-f-]+)\] (?:succeeded|raised|retry|ignored)")


def _all_stopped(pid: int) -> bool:
    """Every thread of ``pid`` stopped (state T), so its log no longer changes."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue  # a thread that just ended
        if state not in ("T", "t"):
            return False
    return True


def busiest_api(connections: dict[str, int]) -> list[str]:
    """The API process holding the most of the burst's kept-alive connections: the
    kernel may have put few or none of them on the other one."""
    return [max(connections, key=lambda name: connections[name])]


def every_api_answers(world: World) -> bool:
    """One health check on a fresh connection; True once each API process has answered
    one (the kernel picks the process per connection, so poll this with a deadline)."""
    _health_answers(world.stack.url)
    return all("GET /health HTTP" in Path(p.log).read_text(errors="replace") for p in _apis(world))


def _apis(world: World) -> list[ProcessRecord]:
    return [p for p in world.stack.processes if p.name == "api" or p.name.startswith("api-")]


def _submissions_answered(record: ProcessRecord) -> int:
    """POSTs of a run in the API process's access log (uvicorn's, one line each)."""
    text = Path(record.log).read_text(errors="replace")
    return text.count("POST /api/projects/main/runs HTTP")


def _health_answers(url: str) -> bool:
    # A client of its own each time: a new connection, which the kernel places anew.
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ApiserverOutage:
    before: Burst
    during: Burst
    down_s: float = 0.0
    resumed_s: float | None = None
    """From the apiserver's return to the first new pod the apiserver saw."""


def stop_apiserver_mid_burst(
    world: World, before: list[RunSpec], during: list[RunSpec], *, outage_s: float
) -> ApiserverOutage:
    """Burst, SIGKILL kube-apiserver, burst again while it is away, restart it after
    ``outage_s`` with its recorded argv."""
    first = Burst(world.stack, before, threads=4).start()
    first.join(timeout=120)
    # Down while the first burst's pods are still being created and synced.
    sigkill(world.cluster.processes["kube-apiserver"])
    down_at = time.monotonic()
    second = Burst(world.stack, during, threads=4).start()
    second.join(timeout=120)
    wait_until(
        lambda: time.monotonic() - down_at >= outage_s,
        timeout=outage_s + 5,
        what="the end of the outage window",
    )
    world.restart_cluster_process("kube-apiserver")
    wait_until(lambda: _apiserver_answers(world), timeout=120, what="kube-apiserver back")
    up_at = time.time()
    outage = ApiserverOutage(before=first, during=second, down_s=time.monotonic() - down_at)
    first_pod = wait_until(
        lambda: world.ledger.first_pod_after(up_at), timeout=120, what="a pod after the return"
    )
    outage.resumed_s = first_pod - up_at
    return outage


@dataclass
class ProxyTakeover:
    leader_after_s: float = 0.0
    """From SIGKILL to the restarted proxy worker holding the lease."""
    fresh_after_s: float = 0.0
    """From SIGKILL to a published inventory that shows a change made while no one led."""
    jump_uids_before: dict[str, str] = field(default_factory=dict)
    jump_uids_after: dict[str, str] = field(default_factory=dict)


def kill_proxy_worker(world: World, *, cordon: str) -> ProxyTakeover:
    """SIGKILL the proxy worker, cordon node ``cordon`` while no one leads, restart it."""
    k = world.kube
    store = world.ctx.store
    lease = store.key("lease", "proxy-worker")
    old = world.process("proxy-worker")
    wait_until(lambda: store.r.get(lease), timeout=60, what="a proxy worker leading")
    # Deployment, Service and Secret: the jump host is fully set up before the kill.
    wait_until(lambda: len(_jump_uids(world)) >= 3, timeout=60, what="the jump host's objects")
    result = ProxyTakeover(jump_uids_before=_jump_uids(world))
    start = time.perf_counter()
    killed_at = time.time()
    sigkill(old)
    k.call(k.core.patch_node, cordon, {"spec": {"unschedulable": True}})
    new = world.stack.restart("proxy-worker")
    holder = wait_until(
        # The holder is "<host>:<pid>:<random>" (workers/proxy.py).
        lambda: f":{new.pid}:" in (store.r.get(lease) or b"").decode(),
        timeout=LEASE_TTL_S + 30,
        what="the restarted proxy worker leading",
    )
    assert holder
    result.leader_after_s = time.perf_counter() - start
    key = world.ctx.clusters.key_for("main")

    def fresh() -> bool:
        published = store.inventory_published().get(key, 0.0)
        raw = store.inventory_json(key)
        if published <= killed_at or raw is None:
            return False
        node = GpuInventory.from_json(raw).node(cordon)
        return node is not None and not node.schedulable

    wait_until(fresh, timeout=60, what="a fresh inventory showing the cordon")
    result.fresh_after_s = time.perf_counter() - start
    result.jump_uids_after = _jump_uids(world)
    return result


def _jump_uids(world: World) -> dict[str, str]:
    k = world.kube
    out = {}
    for kind, lister in (
        ("deployment", k.apps.list_namespaced_deployment),
        ("service", k.core.list_namespaced_service),
        ("secret", k.core.list_namespaced_secret),
    ):
        for obj in k.call(lister, world.namespace, label_selector=LABEL_JUMP).items:
            out[f"{kind}/{obj.metadata.name}"] = obj.metadata.uid
    return out


def _pings(client: redis.Redis[bytes]) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _apiserver_answers(world: World) -> bool:
    try:
        world.kube.call(world.kube.core.list_namespace, limit=1)
    except BerthError:
        return False
    return True
