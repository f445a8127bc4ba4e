"""SSH set-up through the jump host, and the service proxy's overhead, on loopback.

Run by hand: ``.venv/bin/python -m bench.ssh`` (root, with openssh-server and
openssh-client installed; about two minutes). Paths are measured alternately,
so a busy machine slows both alike and the ratios stay fair. It starts its own local cluster
and Berth (API, proxy worker, Celery) in a temporary directory, with the
loopback stand-ins for pods the SSH tests use (``tests/ssh/loopback.py``):
real OpenSSH sshd as the jump pod and the run pod, and the test app as a
service replica. Everything is stopped by PID at the end.

1. Connection set-up, the OpenSSH client: ``ssh -F <berth attach's config> RUN
   true`` (two handshakes: jump host, then pod) against the same command
   straight to the pod's sshd. SkyPilot publishes 1.8 s for its path.
2. Connection set-up, asyncssh (Berth's own client): a fresh login through a
   fresh jump host connection, through the API's pooled one, and straight.
3. Proxied HTTP: ``GET /proxy/services/main/web/who`` through the API, its
   pooled SSH connection and a channel, against a GET straight to the
   replica; both over keep-alive connections, so the difference is the proxy.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import httpx

from cli.local import cluster
from shared import kube, ssh
from tests.ssh.world import SshWorld, new_key, start_world, stop_world
from tests.stack import BERTH

SSH_RUNS = 20  # each `ssh ... true` costs ~0.1-0.5 s: enough for a stable median
ASYNC_RUNS = 30
HTTP_REQUESTS = 500  # per path; enough for a stable p99 at sub-millisecond spreads
APP = Path(__file__).resolve().parents[1] / "tests" / "ssh" / "app.py"

Row = tuple[str, str, str, str]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="berth-bench-ssh-") as tmp:
        directory = Path(tmp)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's sshd needs it
        state, _ = cluster.up(directory / "cluster", timeout_s=180)
        try:
            k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
            world = start_world(state, k, directory / "world", namespace="bench-ssh")
            try:
                rows = _bench(world, directory)
            finally:
                stop_world(world)
                k.close()
        finally:
            cluster.down(directory / "cluster")
    print_table(rows)


def _bench(world: SshWorld, directory: Path) -> list[Row]:
    key, public = new_key(directory, "id_ed25519")
    token = world.add_user("bencher", public)
    world.apps["web"] = lambda pod, _d: [
        sys.executable, str(APP), "--bind", pod.status.pod_ip, "--port", "8000",
        "--name", pod.metadata.name, "--gate", str(directory / "gate"),
    ]  # fmt: skip
    ide = world.submit({"type": "dev-environment", "name": "ide", "ide": "vscode"}, token=token)
    web = world.submit({"type": "service", "name": "web", "port": 8000, "commands": ["serve"]})
    pod_ip = world.running(ide)["jobs"][0]["pod_ip"]
    web_ip = world.running(web)["jobs"][0]["pod_ip"]
    home = directory / "home"
    home.mkdir()
    subprocess.run(
        [BERTH, "attach", ide, "-y", "-i", str(key)],
        env={**world.stack.env, "HOME": str(home)},
        check=True,
        capture_output=True,
    )
    config = world.stack.home / "ssh" / f"{ide}.config"
    through = ["ssh", "-F", str(config), ide, "true"]
    straight = _straight_ssh(config, key, pod_ip)
    _until(lambda: _ok(through) and _ok(straight))
    rows = _pair("ssh RUN true", *_interleaved(_runner(through), _runner(straight), SSH_RUNS))
    rows += asyncio.run(_asyncssh_rows(world, key, pod_ip))
    rows += _http_rows(world, web_ip)
    return rows


def _straight_ssh(config: Path, key: Path, pod_ip: str) -> list[str]:
    """The same login, host key pinned the same way, without the ProxyJump hop."""
    alias = next(
        line.split()[1] for line in config.read_text().splitlines() if "HostKeyAlias berth." in line
    )
    return [
        "ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={config.with_suffix('.known_hosts')}",
        "-o", f"HostKeyAlias={alias}", "-o", "StrictHostKeyChecking=yes",
        "-p", str(ssh.RUN_SSH_PORT), f"{os.environ.get('USER', 'root')}@{pod_ip}", "true",
    ]  # fmt: skip


async def _asyncssh_rows(world: SshWorld, key_file: Path, pod_ip: str) -> list[Row]:
    jump = world.jump()
    key = asyncssh.read_private_key(key_file)
    pod_key = _pod_host_key(world, pod_ip)

    async def login(tunnel: asyncssh.SSHClientConnection | None = None) -> None:
        conn = await ssh.connect(
            pod_ip, ssh.RUN_SSH_PORT, username=jump.user, client_key=key,
            host_key=pod_key, timeout=10, tunnel=tunnel,
        )  # fmt: skip
        conn.close()
        await conn.wait_closed()

    async def through_fresh_jump() -> None:
        conn = await ssh.connect(
            jump.hostname, int(jump.port or 0), username=jump.user, client_key=key,
            host_key=jump.host_key, timeout=10,
        )  # fmt: skip
        async with conn:
            await login(conn)

    pooled = await ssh.connect(
        jump.hostname, int(jump.port or 0), username=jump.user, client_key=key,
        host_key=jump.host_key, timeout=10,
    )  # fmt: skip
    async with pooled:
        fresh, reused, direct = [], [], []
        for _ in range(ASYNC_RUNS):  # interleaved, so all three see the same machine load
            fresh.append(await _timed_async(through_fresh_jump))
            reused.append(await _timed_async(lambda: login(pooled)))
            direct.append(await _timed_async(login))
    rows = _pair("asyncssh login, new jump conn", fresh, direct)
    rows += _pair("asyncssh login, pooled jump conn", reused, direct)
    return rows


def _http_rows(world: SshWorld, web_ip: str) -> list[Row]:
    proxied_url = f"{world.stack.url}/proxy/services/main/web/who"
    with world.stack.client() as proxied, httpx.Client(timeout=10) as direct:
        _until(lambda: proxied.get(proxied_url).status_code == 200)
        first = proxied.get(proxied_url)  # warm: pooled SSH connection and HTTP channel
        assert first.status_code == 200, first.text
        api = next(p.pid for p in world.stack.processes if p.name == "api")
        cpu_before = _cpu_ms(api)
        via, straight = _interleaved(
            lambda: proxied.get(proxied_url),
            lambda: direct.get(f"http://{web_ip}:8000/who"),
            HTTP_REQUESTS,
        )
        api_cpu = (_cpu_ms(api) - cpu_before) / HTTP_REQUESTS
    rows = _pair("GET through /proxy/services", via, straight)
    overhead = statistics.median(via) - statistics.median(straight)
    rows.append(("proxy overhead (p50 difference)", f"{overhead:.2f} ms", "", "API + tunnel"))
    # CPU, unlike wall time, does not grow with other load on the machine.
    rows.append(("API CPU per proxied request", f"{api_cpu:.2f} ms", "", "user + system"))
    return rows


def _cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def _pod_host_key(world: SshWorld, pod_ip: str) -> str:
    with world.stack.client() as c:
        access = c.get("/api/projects/main/runs/ide/ssh").json()
    return str(next(n["host_key"] for n in access["nodes"] if n["pod_ip"] == pod_ip))


def _pair(what: str, via: list[float], straight: list[float]) -> list[Row]:
    ratio = statistics.median(via) / statistics.median(straight)
    return [
        (f"{what}: via jump host", *_stats(via), f"x{ratio:.2f} of direct"),
        (f"{what}: direct", *_stats(straight), f"n={len(straight)}"),
    ]


def _stats(values: list[float]) -> tuple[str, str]:
    return _ms(statistics.median(values)), _ms(_p(values, 0.99))


def _runner(argv: list[str]) -> Callable[[], object]:
    def run() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    return run


def _interleaved(
    via: Callable[[], object], straight: Callable[[], object], n: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``n`` calls of each, alternating, so both see the same load."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for call, out in zip((via, straight), times, strict=True):
            start = time.perf_counter()
            call()
            out.append((time.perf_counter() - start) * 1000)
    return times


async def _timed_async(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    result = call()
    if asyncio.iscoroutine(result):
        await result
    return (time.perf_counter() - start) * 1000


def _ok(argv: list[str]) -> bool:
    return (
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode
        == 0
    )


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("the loopback pods did not come up in time")
        time.sleep(0.1)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def print_table(rows: list[Row]) -> None:
    header: Row = ("measurement", "p50", "p99", "note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        cells = zip(row, widths, strict=True)
        print(
            "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(cells))
        )


if __name__ == "__main__":
    main()
