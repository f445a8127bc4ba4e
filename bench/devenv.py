"""Dev environments: ``berth apply`` to the printed IDE link, on the real nodes.

Run by hand, as root: ``.venv/bin/python -m bench.devenv`` (a few minutes). It
runs ``berth local up`` in a temporary ``BERTH_HOME`` (real nodes, the image
cache warm), then applies ``--runs`` dev environments one after another, each in
a pseudo-terminal as a user's shell runs it, and times from the command's start
to the line ``To connect via SSH, use: ssh NAME``. That line comes only once
sshd in the container answers through the jump pod and the init commands have
finished (``cli/dev_environment.py``), so it is the time to a usable editor
link, not to a Running pod. Each is then detached with Ctrl-C and stopped.
"""

from __future__ import annotations

import argparse
import os
import pty
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.common import machine, pct

BERTH = str(Path(sys.executable).with_name("berth"))
RUNS = 10
_LINK_TIMEOUT_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-bench-devenv-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "BERTH_HOME": str(home / "berth")}
        up = subprocess.run(
            [BERTH, "local", "up"], env=env, capture_output=True, text=True, timeout=900
        )
        # The user's ~/.ssh/config gets the Include: a scratch home, not the real one
        # (only for the applies: Go's and Berth's build caches live under the real one).
        env["HOME"] = str(home)
        if up.returncode != 0:
            raise SystemExit(f"berth local up failed:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
        try:
            seconds = [_apply_to_link(env, home, i) for i in range(args.runs)]
        finally:
            subprocess.run([BERTH, "local", "down"], env=env, capture_output=True, timeout=300)
    print(f"machine: {machine()}")
    print(
        f"berth apply (dev environment) -> IDE link printed, {args.runs} one after another:"
        f" p50 {statistics.median(seconds):.1f} s, p99 {pct(seconds, 99):.1f} s,"
        f" min {min(seconds):.1f} s, max {max(seconds):.1f} s"
    )


def _apply_to_link(env: dict[str, str], home: Path, index: int) -> float:
    name = f"bench-ide-{index}"
    conf = home / f"{name}.dstack.yml"
    conf.write_text(
        textwrap.dedent(
            f"""
            type: dev-environment
            name: {name}
            ide: vscode
            resources: {{gpu: 1, cpu: 1.., memory: 0.1GB..}}
            """
        )
    )
    master, slave = pty.openpty()
    started = time.monotonic()
    proc = subprocess.Popen(
        [BERTH, "apply", "-f", str(conf), "-y"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    needle = f"ssh {name}".encode()
    try:
        while needle not in seen:
            if time.monotonic() - started > _LINK_TIMEOUT_S:
                raise SystemExit(f"{name}: no link in {_LINK_TIMEOUT_S:.0f}s:\n{seen[-2000:]!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise SystemExit(f"{name}: apply ended without a link:\n{seen[-2000:]!r}")
            seen += chunk
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: detach, the run keeps running
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        os.close(master)
        subprocess.run([BERTH, "stop", name], env=env, capture_output=True, timeout=60)
    print(f"{name}: {elapsed:.1f} s", flush=True)
    return elapsed


if __name__ == "__main__":
    main()
