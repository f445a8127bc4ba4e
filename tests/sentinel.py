"""A Redis Sentinel group on loopback, for fault tests and benches.

Three ``redis-server`` (one primary, two replicas) and three Sentinels
(``redis-server --sentinel``, the same binary Debian's ``redis-sentinel`` links
to), each on a free port with its own directory, recorded by PID and stopped
by PID. The data nodes run as Berth ships Redis (``cli.local.cluster.redis_argv``:
AOF, ``noeviction``). Sentinel timeouts are short so a failover takes seconds:
``down-after-milliseconds`` 1000 (a primary silent that long is down),
``failover-timeout`` 5000.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cli.local.cluster import redis_argv
from cli.local.processes import ProcessRecord, free_port, log_tail, start_process, stop_process
from tests.polling import wait_until

MASTER_NAME = "berth"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
_QUORUM = 2  # of 3 Sentinels: one may be lost, two must agree the primary is down


@dataclass
class SentinelGroup:
    directory: Path
    master_name: str
    servers: list[ProcessRecord] = field(default_factory=list)
    """The data nodes; the first started as the primary."""
    server_ports: list[int] = field(default_factory=list)
    sentinels: list[ProcessRecord] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    password: str | None = None
    """The data nodes' ``requirepass`` (and ``masterauth``), if any."""
    sentinel_password: str | None = None
    """The Sentinels' own ``requirepass``, if any."""

    @property
    def addresses(self) -> list[str]:
        """The Sentinels as ``host:port``, as ``BERTH_REDIS__SENTINELS`` wants them."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def env(self, *, min_replica_acks: int = 0) -> dict[str, str]:
        """Berth's settings pointing its store and broker at this group."""
        quoted = ",".join(f'"{a}"' for a in self.addresses)
        env = {
            "BERTH_REDIS__SENTINELS": f"[{quoted}]",
            "BERTH_REDIS__MASTER_NAME": self.master_name,
            "BERTH_REDIS__MIN_REPLICA_ACKS": str(min_replica_acks),
        }
        if self.password is not None:
            env["BERTH_REDIS__URL"] = f"redis://:{self.password}@127.0.0.1/0"
        if self.sentinel_password is not None:
            env["BERTH_REDIS__SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def primary_port(self) -> int | None:
        """The primary's port as a Sentinel majority reports it (None if none answers)."""
        for port in self.sentinel_ports:
            client = _client(port, self.sentinel_password)
            try:
                # Raw, as in _sees_everyone: redis-py 6's parser for it fails on its own call.
                _, primary = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                return int(primary)
            except (redis.RedisError, TypeError):
                continue
            finally:
                client.close()
        return None

    def primary(self) -> ProcessRecord:
        port = self.primary_port()
        assert port is not None, "no Sentinel answers"
        return self.servers[self.server_ports.index(port)]

    def server(self, port: int) -> ProcessRecord:
        return self.servers[self.server_ports.index(port)]

    def replicas_of_primary(self) -> int:
        """Replicas acknowledging the primary's writes, or -1 if it is away."""
        port = self.primary_port()
        return -1 if port is None else acknowledging_replicas(port, password=self.password)

    def restart_server(self, port: int) -> ProcessRecord:
        """Start a stopped data node again with its argv; Sentinel makes it a replica."""
        index = self.server_ports.index(port)
        old = self.servers[index]
        stop_process(old)
        record = start_process(old.name, old.argv, log_dir=Path(old.log).parent)
        self.servers[index] = record
        return record

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{log_tail(p, 30)}" for p in (*self.servers, *self.sentinels)
        )

    def stop(self) -> None:
        for record in (*self.sentinels, *self.servers):
            stop_process(record)


def start_sentinel_group(
    directory: Path,
    *,
    master_name: str = MASTER_NAME,
    replicas: int = 2,
    sentinels: int = 3,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> SentinelGroup:
    """Start the group and return once every Sentinel sees the primary, its replicas
    and the other Sentinels (before that, a failover could not happen). With
    ``password`` the data nodes ask for it, with ``sentinel_password`` the Sentinels."""
    group = SentinelGroup(
        directory=directory,
        master_name=master_name,
        password=password,
        sentinel_password=sentinel_password,
    )
    try:
        _start_servers(group, replicas)
        _start_sentinels(group, sentinels)
        wait_until(
            lambda: all(
                _sees_everyone(group, port, replicas, sentinels) for port in group.sentinel_ports
            ),
            timeout=60,
            what="every Sentinel seeing the replicas and the other Sentinels",
        )
    except BaseException as e:
        logs = group.logs()
        group.stop()
        if isinstance(e, AssertionError):
            raise AssertionError(f"{e}\n{logs}") from None
        raise
    return group


def _start_servers(group: SentinelGroup, replicas: int) -> None:
    logs = group.directory / "logs"
    for i in range(1 + replicas):
        port = free_port()
        # No 5 s pause before a replica's first sync (Redis waits for more replicas to
        # share one transfer): the group is up sooner and a returning node syncs at once.
        argv = redis_argv(port, group.directory / f"redis-{i}")
        argv += ["--repl-diskless-sync-delay", "0"]
        if i > 0:
            argv += ["--replicaof", "127.0.0.1", str(group.server_ports[0])]
        if group.password is not None:
            argv += ["--requirepass", group.password, "--masterauth", group.password]
        group.servers.append(start_process(f"redis-{i}", argv, log_dir=logs))
        group.server_ports.append(port)
    wait_until(
        lambda: acknowledging_replicas(group.server_ports[0], password=group.password) == replicas,
        timeout=30,
        what="the replicas in sync with the primary",
    )


def _start_sentinels(group: SentinelGroup, count: int) -> None:
    logs = group.directory / "logs"
    for i in range(count):
        port = free_port()
        directory = group.directory / f"sentinel-{i}"
        directory.mkdir(parents=True)
        # Sentinel rewrites its file (what it learns about replicas, peers, epochs).
        conf = directory / "sentinel.conf"
        conf.write_text(_sentinel_conf(group, port, directory))
        argv = [group.servers[0].argv[0], str(conf), "--sentinel"]
        group.sentinels.append(start_process(f"sentinel-{i}", argv, log_dir=logs))
        group.sentinel_ports.append(port)


def _sentinel_conf(group: SentinelGroup, port: int, directory: Path) -> str:
    name = group.master_name
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {directory}",
        f"sentinel monitor {name} 127.0.0.1 {group.server_ports[0]} {_QUORUM}",
        f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {name} 1",
    ]
    if group.password is not None:
        lines.append(f"sentinel auth-pass {name} {group.password}")
    if group.sentinel_password is not None:
        lines.append(f"requirepass {group.sentinel_password}")
        # Sentinels ask each other whether the primary is down: the same password.
        lines.append(f"sentinel sentinel-pass {group.sentinel_password}")
    return "\n".join(lines) + "\n"


def _sees_everyone(group: SentinelGroup, port: int, replicas: int, sentinels: int) -> bool:
    client = _client(port, group.sentinel_password)
    try:
        # Raw: redis-py 6's reply parser for SENTINEL MASTER takes an argument it is not given.
        reply = client.execute_command("SENTINEL", "MASTER", group.master_name)
    except redis.RedisError:
        return False
    finally:
        client.close()
    state = dict(zip(reply[::2], reply[1::2], strict=True))
    return bool(
        int(state.get("num-slaves", 0)) == replicas
        and int(state.get("num-other-sentinels", 0)) == sentinels - 1
    )


def acknowledging_replicas(port: int, *, password: str | None = None) -> int:
    """Replicas of the server on ``port`` that acknowledge a write (``WAIT``); -1 if it
    is away. Stricter than ``INFO``'s "online": a replica fresh from its first sync is
    online some moments before it answers acknowledgements."""
    client = _client(port, password)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr("sentinel-group:probe")
        pipe.wait(3, 200)
        return int(pipe.execute()[1])
    except redis.RedisError:
        return -1
    finally:
        client.close()


def _client(port: int, password: str | None = None) -> redis.Redis[str]:
    return redis.Redis(
        port=port,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


@contextmanager
def replica_pair(directory: Path) -> Iterator[tuple[int, int]]:
    """A primary and one replica in sync on loopback, no Sentinel: (primary, replica)
    ports. Both are stopped on exit, by PID."""
    primary, replica = free_port(), free_port()
    records: list[ProcessRecord] = []
    try:
        # No 5 s pause before the replica's first sync (_start_servers says why).
        argv = [*redis_argv(primary, directory / "p"), "--repl-diskless-sync-delay", "0"]
        records.append(start_process("primary", argv, log_dir=directory))
        argv = [*redis_argv(replica, directory / "r"), "--replicaof", "127.0.0.1", str(primary)]
        records.append(start_process("replica", argv, log_dir=directory))
        wait_until(
            lambda: acknowledging_replicas(primary) == 1, timeout=30, what="the replica in sync"
        )
        yield primary, replica
    finally:
        for record in reversed(records):
            stop_process(record)
