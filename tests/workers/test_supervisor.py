"""The run container's PID 1 script, run here by the shells run images have (dash, bash).

Its output counting must not change what a run does: every byte, in the order written
(stdout and stderr merged into the container's stdout, so one stream keeps that order),
the commands' exit status, a stop that reaches the commands. What it adds is one line
in the termination message, ``berth-output-lines N``; and, asked to, a copy of the
output kept in the container and a hold at the end for the collector to read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.supervisor import (
    END_MARKER,
    Keeping,
    OutputEnd,
    output_end,
    printed_lines,
    read_kept_command,
    release_command,
    script,
)

# Debian's and Ubuntu's sh, bash, and an Alpine-like image: busybox's sh and applets only.
SHELLS = [
    pytest.param(
        shell,
        marks=pytest.mark.skipif(shutil.which(shell) is None, reason=f"no {shell} here"),
    )
    for shell in ("dash", "bash", "busybox")
]
_APPLETS = ("sh", "tee", "wc", "mkfifo", "mktemp", "sleep", "seq", "rm")  # no cat: not needed
_KEEPING_APPLETS = (*_APPLETS, "head", "cat")  # what keeping a copy takes
_UID = "0b6e4a52-7c1d-4f3e-9a8b-2d5c6e7f8091"
# The log API's timestamp (timestamps=true), put in front of the end line as it would be.
_STAMP = b"2026-12-07T21:00:00.123456789Z "


def _run(
    tmp_path: Path, shell: str, body: list[str], *, path: str | None = None
) -> tuple[subprocess.CompletedProcess[bytes], str]:
    return _finished(*_start(tmp_path, shell, body, path=path))


def _start(
    tmp_path: Path,
    shell: str,
    body: list[str],
    *,
    path: str | None = None,
    keep_bytes: int = 0,
    rotate_bytes: int = 0,
    hold_s: int = 0,
    uid: str | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "termination-log"
    log.write_text("")
    sh, found = _shell(tmp_path, shell, _KEEPING_APPLETS if keep_bytes else _APPLETS)
    env = {"PATH": path or found, "TMPDIR": str(tmp_path)}
    if uid is not None:
        env["BERTH_POD_UID"] = uid
    text = script(
        ["echo from the preamble"],
        body,
        termination_log=str(log),
        keeping=Keeping(keep_bytes, rotate_bytes, hold_s),
    )
    proc = subprocess.Popen(
        [sh, "-c", text], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return proc, log


def _finished(
    proc: subprocess.Popen[bytes], log: Path
) -> tuple[subprocess.CompletedProcess[bytes], str]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), log.read_text()


def _shell(tmp_path: Path, shell: str, applets: tuple[str, ...] = _APPLETS) -> tuple[str, str]:
    """The shell's path and the PATH to run it with: for busybox, a directory of its
    applets alone, as in an Alpine image."""
    binary = shutil.which(shell) or shell
    if shell != "busybox":
        return binary, os.environ["PATH"]
    found = tmp_path / "applets"
    found.mkdir(exist_ok=True)
    for name in applets:
        if not (found / name).exists():
            (found / name).symlink_to(binary)
    return str(found / "sh"), str(found)


@pytest.mark.parametrize("shell", SHELLS)
def test_every_line_passes_in_the_order_written_and_the_total_is_the_termination_message(
    tmp_path: Path, shell: str
) -> None:
    body = ["seq 1 1000", "echo oops >&2", "seq 1001 1002", "printf 'no newline'", "exit 3"]
    done, message = _run(tmp_path, shell, body)
    assert done.returncode == 3
    lines = "\n".join(str(i) for i in range(1, 1001))
    expected = f"from the preamble\n{lines}\noops\n1001\n1002\nno newline"
    assert done.stdout == expected.encode()
    assert done.stderr == b""
    # Newlines, as the collector counts stored lines that had one: 1 + 1,000 + 1 + 2.
    assert message == "berth-output-lines 1004\n"
    assert printed_lines(message) == 1004


@pytest.mark.parametrize("shell", SHELLS)
def test_a_command_that_fails_under_set_e_still_ends_the_run_with_its_status(
    tmp_path: Path, shell: str
) -> None:
    done, message = _run(tmp_path, shell, ["echo before", "false", "echo never"])
    assert done.returncode == 1
    assert done.stdout == b"from the preamble\nbefore\n"
    assert printed_lines(message) == 2


def test_a_stopped_run_reports_the_lines_printed_while_it_wound_down(tmp_path: Path) -> None:
    """Not PID 1 here: the TERM goes to the commands' shell, whose trap prints and exits."""
    log = tmp_path / "termination-log"
    log.write_text("")
    ready = tmp_path / "ready"
    body = [
        "trap 'echo winding down; exit 0' TERM",
        "echo started",
        f": > {ready}",
        "while :; do sleep 0.05; done",
    ]
    text = script([], body, termination_log=str(log))
    proc = subprocess.Popen(
        ["dash", "-c", text],
        env={"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(ready)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    # Every line, the shell's own "Terminated" for a killed sleep too (if it says it).
    assert out.replace(b"Terminated\n", b"") == b"started\nwinding down\n"
    assert printed_lines(log.read_text()) == out.count(b"\n")


needs_pid_1 = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to be PID 1 of a new PID namespace",
)


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_as_pid_1_a_stop_reaches_every_process_but_the_counters(tmp_path: Path, shell: str) -> None:
    """As a container's PID 1, the stop is ``kill -TERM -1``: every process but PID 1,
    the counters included, which ignore it so the commands' last words are counted."""
    ready = tmp_path / "ready"
    body = [
        "trap 'echo winding down; exit 0' TERM",
        "(trap 'exit 0' TERM; sleep 600 & wait; echo never) &",  # stopped too
        "echo started",
        f": > {ready}",
        "while :; do sleep 0.05; done",
    ]
    with _as_pid_1(tmp_path, body, shell) as (proc, log):
        _wait_for(ready)
        os.kill(_only_child(proc.pid), signal.SIGTERM)  # PID 1, as the kubelet signals it
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # Every line, the shell's own "Terminated" for a killed sleep too (if it says it).
    assert out.replace(b"Terminated\n", b"") == b"started\nwinding down\n"
    assert printed_lines(log.read_text()) == out.count(b"\n")


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_what_the_commands_left_running_is_stopped_at_the_end_and_the_output_counted(
    tmp_path: Path, shell: str
) -> None:
    """Background processes hold the output open: PID 1 sends them TERM once the
    commands are done (the container would SIGKILL them as PID 1 exits anyway); one that
    kept printing kept PID 1 waiting for good."""
    body = ["sleep 600 &", "(while :; do echo tick; sleep 0.2; done) &", "echo done", "exit 5"]
    with _as_pid_1(tmp_path, body, shell) as (proc, log):
        out, err = proc.communicate(timeout=60)  # not 600 s, nor forever
    assert proc.returncode == 5, err
    assert b"done\n" in out and set(out.decode().splitlines()) <= {"done", "tick", "Terminated"}
    assert printed_lines(log.read_text()) == out.count(b"\n")


@needs_pid_1
def test_a_background_process_that_ignores_term_leaves_the_run_uncounted_not_stuck(
    tmp_path: Path,
) -> None:
    # Forked while TERM is ignored, so it ignores it from its first instant.
    body = ["trap '' TERM", "sleep 600 &", "trap - TERM", "echo left a sleeper", "exit 5"]
    with _as_pid_1(tmp_path, body) as (proc, log):
        out, err = proc.communicate(timeout=60)  # not 600 s: PID 1 gives up on the count
    assert proc.returncode == 5, err
    assert out == b"left a sleeper\n"
    assert log.read_text() == ""  # still held open: no count rather than a wrong one


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_an_early_exit_in_berths_setup_keeps_its_reason_and_the_count(
    tmp_path: Path, shell: str
) -> None:
    """PID 1 exiting before the commands (``exit 1`` after a peer never resolved, a
    ``set -e`` failure) still waits for tee: as PID 1, whatever tee had not passed on
    would die with it (seen: the reason lost in 19-32 of 50 runs)."""
    preamble = ("echo reason >&2", "seq 1 5", "exit 1")
    with _as_pid_1(tmp_path, ["echo never"], shell, preamble) as (proc, log):
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert out == b"reason\n1\n2\n3\n4\n5\n"
    assert printed_lines(log.read_text()) == 6
    assert not list(tmp_path.glob(".berth-output.*"))  # its FIFOs removed once counted


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_a_syntax_error_in_the_commands_is_shown_not_lost(tmp_path: Path, shell: str) -> None:
    with _as_pid_1(tmp_path, ['echo "unbalanced'], shell, ("echo set up",)) as (proc, log):
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    lines = out.decode().splitlines()
    assert lines[0] == "set up" and len(lines) == 2, lines
    assert "unterminated" in lines[1].lower() or "unexpected eof" in lines[1].lower()
    assert printed_lines(log.read_text()) == 2


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_a_reader_that_stalls_at_the_end_still_gets_every_line(tmp_path: Path, shell: str) -> None:
    """The runtime reading the container's stdout slowly (disk pressure) leaves tee
    blocked with the last lines: PID 1 waits while tee makes progress, and for up to
    REPORT_IDLE_S without, not a fixed time (seen: 12,773 of 20,000 lines with 2 s)."""
    with _as_pid_1(tmp_path, ["seq 1 20000"], shell) as (proc, log):
        time.sleep(3)  # nobody reads: tee blocks on a full pipe
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == [str(i) for i in range(1, 20001)]
    assert printed_lines(log.read_text()) == 20000


def test_an_image_without_tee_runs_as_before_uncounted(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dash", "wc", "mkfifo", "mktemp", "cat", "sleep", "seq"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    done, message = _run(tmp_path, "dash", ["seq 1 3", "exit 4"], path=str(tools))
    assert done.returncode == 4
    assert done.stdout == b"from the preamble\n1\n2\n3\n"
    assert message == ""


def test_the_count_is_read_from_the_last_berth_line_whatever_the_job_wrote_before() -> None:
    assert printed_lines("berth-output-lines 12\n") == 12
    assert printed_lines("my own message\nberth-output-lines 7\n") == 7
    assert printed_lines("berth-output-lines 1\nberth-output-lines 2") == 2
    assert printed_lines("") is None
    assert printed_lines(None) is None
    assert printed_lines("berth-output-lines twelve") is None
    assert printed_lines("not berth-output-lines 5") is None


@pytest.mark.parametrize("shell", SHELLS)
def test_the_copy_is_the_merged_output_and_pid_1_holds_until_the_collector_has_read_it(
    tmp_path: Path, shell: str
) -> None:
    body = ["seq 1 100", "echo oops >&2", "printf 'no newline'", "exit 3"]
    lines = "".join(f"{i}\n" for i in range(1, 101))
    expected = f"from the preamble\n{lines}oops\nno newline".encode()
    printed = expected.count(b"\n")
    # Exactly the log file's size these lines make: the hold's threshold is inclusive.
    rotate = len(expected) + 41 * printed
    proc, log = _start(
        tmp_path, shell, body, keep_bytes=10_000, rotate_bytes=rotate, hold_s=20, uid=_UID
    )
    try:
        shown, end = _end(proc)
        assert shown == expected
        assert end == OutputEnd(printed, len(expected), end.directory)
        assert Path(end.directory).parent == tmp_path
        assert printed_lines(log.read_text()) == printed  # written before the hold
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)  # held
        read = subprocess.run(read_kept_command(end.directory), capture_output=True, timeout=10)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)  # still held: the collector has not stored it yet
        subprocess.run(release_command(end.directory), check=True, timeout=10)
        released = time.monotonic()
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert time.monotonic() - released < 2  # not hold_s
    assert read.returncode == 0 and read.stdout == expected, read.stderr
    assert proc.returncode == 3
    assert err == b""
    _end_lines(out, end)  # nothing else: the output was read by _end
    assert not Path(end.directory).exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_hold_nobody_releases_ends_after_hold_s(tmp_path: Path, shell: str) -> None:
    proc, log = _start(tmp_path, shell, ["echo done"], keep_bytes=10_000, hold_s=1, uid=_UID)
    try:
        shown, end = _end(proc)
        held = time.monotonic()
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert 0.9 <= time.monotonic() - held < 5
    assert proc.returncode == 0, err
    assert (shown, out) == (b"from the preamble\ndone\n", b"")
    assert printed_lines(log.read_text()) == end.lines == 2
    assert not Path(end.directory).exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_while_it_holds_pid_1_says_its_end_line_again_every_2_s(tmp_path: Path, shell: str) -> None:
    """The kubelet serves only its newest log file: a rotation during the hold can take
    the end line out of it, and a collector back later would never see it."""
    proc, _ = _start(tmp_path, shell, ["echo done"], keep_bytes=10_000, hold_s=3, uid=_UID)
    try:
        _, end = _end(proc)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert _end_lines(out, end) == 1  # at 2 s; the hold ends at 3 s


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_as_pid_1_a_stop_during_the_hold_ends_it_at_once(tmp_path: Path, shell: str) -> None:
    body = ["echo done", "exit 3"]
    with _as_pid_1(tmp_path, body, shell, keep_bytes=10_000, hold_s=20) as (proc, log):
        shown, end = _end(proc)
        stopped = time.monotonic()
        os.kill(_only_child(proc.pid), signal.SIGTERM)  # PID 1, as the kubelet signals it
        out, err = proc.communicate(timeout=10)
    assert time.monotonic() - stopped < 2  # not hold_s
    assert proc.returncode == 3, err
    assert shown == b"done\n"
    _end_lines(out, end)
    assert printed_lines(log.read_text()) == 1
    assert not Path(end.directory).exists()


@needs_pid_1
@pytest.mark.parametrize("shell", SHELLS)
def test_as_pid_1_a_stop_while_the_commands_run_is_not_held_at_the_end(
    tmp_path: Path, shell: str
) -> None:
    """The usual stop comes while the commands run (a dev environment's never end): the
    output is counted and PID 1 exits once they have, not after a hold."""
    with _as_pid_1(
        tmp_path, ["echo started", "sleep 600"], shell, keep_bytes=10_000, hold_s=20
    ) as (
        proc,
        log,
    ):
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        stopped = time.monotonic()
        os.kill(_only_child(proc.pid), signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert time.monotonic() - stopped < 5  # not hold_s
    assert proc.returncode == 143, err
    assert END_MARKER.encode() not in out
    # "started", and whatever the shell said of the sleep it lost (dash: "Terminated").
    assert printed_lines(log.read_text()) == 1 + out.count(b"\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_run_too_short_to_meet_a_rotation_is_not_held(tmp_path: Path, shell: str) -> None:
    # 18 + 21 bytes and 11 lines: 490 bytes of log file, one short of the threshold.
    started = _start(
        tmp_path, shell, ["seq 1 10"], keep_bytes=10_000, rotate_bytes=491, hold_s=5, uid=_UID
    )
    done, message = _finished(*started)
    assert done.returncode == 0 and done.stderr == b""
    assert printed_lines(message) == 11
    assert not list(tmp_path.glob(".berth-output.*"))


@pytest.mark.parametrize("shell", SHELLS)
def test_more_output_than_the_copy_holds_keeps_its_first_bytes_and_is_not_held(
    tmp_path: Path, shell: str
) -> None:
    go = tmp_path / "go"
    body = ["seq 1 100", f"until [ -e {go} ]; do sleep 0.02; done", "seq 101 20000"]
    proc, log = _start(tmp_path, shell, body, keep_bytes=50, hold_s=5, uid=_UID)
    try:
        kept = _kept(tmp_path, 50)  # read while the commands run: no hold to read it in
        go.touch()
        done, message = _finished(proc, log)
    finally:
        proc.kill()
    assert done.returncode == 0 and done.stderr == b""
    # Most of it written once the copy was full: the keeper still drains its FIFO, so
    # tee goes on (a FIFO without a reader would end it with SIGPIPE).
    lines = "".join(f"{i}\n" for i in range(1, 20001))
    assert done.stdout == f"from the preamble\n{lines}".encode()
    assert kept == done.stdout[:50]
    assert printed_lines(message) == 20001
    assert not list(tmp_path.glob(".berth-output.*"))


def test_a_pod_without_its_uid_is_not_held(tmp_path: Path) -> None:
    started = _start(tmp_path, "dash", ["seq 1 3"], keep_bytes=10_000, hold_s=5)
    done, message = _finished(*started)
    assert done.returncode == 0 and done.stderr == b""
    assert printed_lines(message) == 4


def test_an_image_without_head_keeps_no_copy_but_is_counted(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dash", "tee", "wc", "mkfifo", "mktemp", "cat", "sleep", "seq", "rm"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    started = _start(
        tmp_path, "dash", ["seq 1 3"], path=str(tools), keep_bytes=10_000, hold_s=5, uid=_UID
    )
    done, message = _finished(*started)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout == b"from the preamble\n1\n2\n3\n"
    assert message == "berth-output-lines 4\n"


def test_the_end_line_is_found_alone_or_after_a_last_line_without_a_newline() -> None:
    end = OutputEnd(1, 3, "/d")
    assert output_end(_STAMP + b"berth-output-end uid 1 3 /d\n", "uid") == (b"", end)
    # On the same stream as the output: a last line without a newline comes first, with
    # no timestamp of its own for the end line (or with one, from a kubelet that stamps
    # each record).
    glued = _STAMP + b"abc" + b"berth-output-end uid 1 3 /d\n"
    assert output_end(glued, "uid") == (_STAMP + b"abc", end)
    stamped = _STAMP + b"abc" + _STAMP + b"berth-output-end uid 1 3 /d\n"
    assert output_end(stamped, "uid") == (_STAMP + b"abc", end)
    assert output_end(b"2026-12-07T21:00:00Z berth-output-end uid 1 3 /d", "uid") == (b"", end)
    # A repeat, said while PID 1 holds on: the same end, marked.
    found = output_end(_STAMP + b"berth-output-end uid 1 3 /d again\n", "uid")
    assert found == (b"", end) and found[1].again and not end.again


def test_anything_but_this_pods_end_line_is_not_an_end() -> None:
    assert output_end(_STAMP + b"berth-output-end other 1 3 /d\n", "uid") is None
    assert output_end(_STAMP + b"an ordinary line\n", "uid") is None
    assert output_end(_STAMP + b"berth-output-end uid 1 3 /d and more\n", "uid") is None
    assert output_end(_STAMP + b"berth-output-end uid one 3 /d\n", "uid") is None
    assert output_end(_STAMP + b"berth-output-end uid 1 3 relative\n", "uid") is None
    assert output_end(_STAMP + b"berth-output-end  1 3 /d\n", "") is None
    huge = b"9" * 5000  # int() of this raises; a collector thread must not
    assert output_end(_STAMP + b"berth-output-end uid 1 " + huge + b" /d\n", "uid") is None


def test_the_release_command_lets_pid_1_end(tmp_path: Path) -> None:
    (tmp_path / "hold").touch()
    subprocess.run(release_command(str(tmp_path)), check=True, timeout=10)
    assert not (tmp_path / "hold").exists()


@contextlib.contextmanager
def _as_pid_1(
    tmp_path: Path,
    body: list[str],
    shell: str = "dash",
    preamble: tuple[str, ...] = (),
    *,
    keep_bytes: int = 0,
    hold_s: int = 0,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The script as PID 1 of a PID namespace of its own, as in a container: when it
    exits, the kernel ends every process left in it (the sleepers above)."""
    log = tmp_path / "termination-log"
    log.write_text("")
    unshare = shutil.which("unshare")
    assert unshare is not None
    sh, path = _shell(tmp_path, shell, _KEEPING_APPLETS if keep_bytes else _APPLETS)
    keeping = Keeping(copy_bytes=keep_bytes, hold_s=hold_s)
    text = script(list(preamble), body, termination_log=str(log), keeping=keeping)
    proc = subprocess.Popen(
        # --mount-proc: /proc is the namespace's, as in a container (tee's io is read there).
        [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", sh, "-c", text],
        env={"PATH": path, "TMPDIR": str(tmp_path), "BERTH_POD_UID": _UID},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, log
    finally:
        proc.kill()
        proc.wait(10)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _end(proc: subprocess.Popen[bytes]) -> tuple[bytes, OutputEnd]:
    """The output up to PID 1's end line (on stdout, after all of it), and what the line
    says, read as the collector reads it: a last line without a newline comes glued."""
    assert proc.stdout is not None
    before = b""
    while True:
        line = proc.stdout.readline()
        assert line, f"no end line after {before[-200:]!r}"
        found = output_end(_STAMP + line, _UID)
        if found is None:
            before += line
            continue
        glued, end = found
        return before + glued[len(_STAMP) :], end


def _end_lines(out: bytes, end: OutputEnd) -> int:
    """How many times PID 1 said its end line again in ``out``, which holds nothing else."""
    line = f"berth-output-end {_UID} {end.lines} {end.bytes} {end.directory} again\n".encode()
    assert out == line * out.count(line), out[:300]
    return out.count(line)


def _kept(tmp_path: Path, size: int) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        for kept in tmp_path.glob(".berth-output.*/kept"):
            if kept.stat().st_size >= size:
                return kept.read_bytes()
        assert time.monotonic() < deadline, "no copy of that size"
        time.sleep(0.02)


def _only_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])
