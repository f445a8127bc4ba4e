"""``berth apply`` of a dev environment in a terminal, as a dstack user opens one.

The CLI runs in a pseudo-terminal, as from a shell: it must stream the init
commands' output, print the IDE link and the ``ssh RUN`` line only once sshd
answers through the jump pod and init has finished, forward the run's ports,
and detach on Ctrl-C leaving the run running.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.interactive import foreground_signals
from tests.polling import wait_until
from tests.realnode.world import START_S, run, stop, write
from tests.stack import BERTH, Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

NAME = "real-dev"
_REMOTE_SERVER_NEEDS = (
    "getconf GNU_LIBC_VERSION; command -v tar bash;"
    " for f in /usr/lib/*/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do"
    ' grep -qa GLIBCXX_3.4.25 "$f" 2>/dev/null && echo libstdc++-ok && break; done;'
    ' test -w "$HOME" && echo home-writable'
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Terminal:
    """A process on a pseudo-terminal, everything it writes collected as it comes."""

    proc: subprocess.Popen[bytes]
    master: int
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text(self) -> str:
        raw = b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")
        return _ANSI.sub("", raw)  # colours and styles, as the terminal would draw them

    def read_until(self, needle: str, *, timeout: float) -> str:
        wait_until(lambda: needle in self.text, timeout=timeout, what=f"{needle!r} on the terminal")
        return self.text


def _spawn(argv: list[str], env: dict[str, str]) -> Terminal:
    master, slave = pty.openpty()
    # A session of its own, like a shell's job: Ctrl-C goes to its whole group.
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=foreground_signals,
    )
    os.close(slave)
    term = Terminal(proc=proc, master=master)

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return  # the child closed the terminal
            if not data:
                return
            term.chunks.append(data)

    threading.Thread(target=pump, daemon=True).start()
    return term


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The user's home: ~/.ssh/config gets its Include here, not in the real one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def dev_environment(
    real_stack: Stack, tmp_path: Path, home: Path
) -> Iterator[tuple[Terminal, int]]:
    local = _free_port()
    conf = write(
        tmp_path,
        f"""
        type: dev-environment
        name: {NAME}
        ide: vscode
        init:
          - echo init step one
          - sleep 3
          - echo init step two
          - (cd /tmp && exec python3 -m http.server 8000 >/dev/null 2>&1 &)
        ports: ["{local}:8000"]
        resources: {{gpu: 1, cpu: 1.., memory: 0.1GB..}}
        """,
    )
    term = _spawn([BERTH, "apply", "-f", str(conf), "-y"], {**real_stack.env, "HOME": str(home)})
    try:
        yield term, local
    finally:
        if term.proc.poll() is None:
            os.killpg(term.proc.pid, signal.SIGKILL)
            term.proc.wait(10)
        os.close(term.master)
        stop(real_stack, NAME)


def test_apply_prints_the_ide_link_once_ssh_works_and_forwards_ports_until_ctrl_c(
    real_stack: Stack, dev_environment: tuple[Terminal, int], home: Path
) -> None:
    term, local = dev_environment
    text = term.read_until(f"To connect via SSH, use: ssh {NAME}", timeout=2 * START_S)
    # init ran, and its output streamed, before the link was printed.
    link = f"vscode://vscode-remote/ssh-remote+{NAME}/workflow"
    assert text.index("init step one") < text.index("init step two") < text.index(link), text
    assert "To open in VS Code Desktop, use this link:" in text

    # `ssh RUN` from the same machine, at once, with no further step.
    result = subprocess.run(
        ["ssh", "-F", str(home / ".ssh" / "config"), NAME, "cat /proc/1/cmdline; echo; echo $PWD"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sleep" in result.stdout or "sh" in result.stdout, result.stdout

    # What VS Code's and Cursor's remote servers need, as they install them over SSH
    # from the user's machine (nothing is downloaded by the pod): glibc >= 2.28,
    # libstdc++ with GLIBCXX_3.4.25, tar, bash and a writable home.
    needs = subprocess.run(
        ["ssh", "-F", str(home / ".ssh" / "config"), NAME, _REMOTE_SERVER_NEEDS],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert needs.returncode == 0, needs.stderr
    glibc, tar, bash, libstdcxx, writable = needs.stdout.split("\n")[:5]
    assert tuple(int(x) for x in glibc.split()[1].split(".")[:2]) >= (2, 28), glibc
    assert tar.endswith("/tar") and bash.endswith("/bash")
    assert (libstdcxx, writable) == ("libstdc++-ok", "home-writable"), needs.stdout

    # The run's port is forwarded to localhost while attached.
    url = f"http://127.0.0.1:{local}/"
    wait_until(lambda: _status(url) == 200, timeout=30, what="the forwarded port")

    os.killpg(term.proc.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it
    assert term.proc.wait(15) == 0, term.text
    assert f"detached; {NAME} keeps running" in term.text
    assert run(real_stack, NAME)["status"] == "running"
    assert _status(url) is None  # forwarding ended with the CLI

    again = subprocess.run(
        [BERTH, "attach", NAME, "-d", "-y"],
        env={**real_stack.env, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr + again.stdout
    assert link in again.stdout and f"ssh {NAME}" in again.stdout


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None
