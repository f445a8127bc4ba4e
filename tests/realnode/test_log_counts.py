"""Run containers count and keep their output: what the kubelet lost is put back, or said.

The count is PID 1's (workers/supervisor.py), in the container's termination message;
the collector compares it with what it stored (workers/collector/follow.py). On the
real nodes the kubelet rotates at 1 MiB and keeps two files, and its log API serves
only the newest: what a collector does not read in time is gone from there. A
container whose log reached a rotation holds on at its end (``logs.hold_s``) for the
collector to read its own copy (workers/collector/recovery.py); past that, the reader
is told exactly how many lines are missing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import kube
from shared.errors import KubeError
from tests.polling import wait_until
from tests.realnode.world import (
    SMALL,
    START_S,
    apply,
    log_meta,
    logs,
    run,
    sigkill,
    wait_status,
)
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]

_STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")


def test_a_short_run_is_counted_exactly_and_its_unended_last_line_is_no_line_missing(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: counted
        commands:
          - seq 1 100
          - echo to stderr >&2
          - printf 'no newline at the end'
        {SMALL}
        """,
    )
    done = wait_status(real_stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", done
    out = logs(real_stack, name, "-f")
    lines = [str(i) for i in range(1, 101)] + ["to stderr", "no newline at the end"]
    assert out.splitlines() == lines  # no "[berth] ... missing" line
    meta = log_meta(real_stack, real_kube, name)
    # 101 newlines printed; the last line, ended by the collector, was never counted.
    assert (meta.printed, meta.missing, meta.lines, meta.unended) == (101, 0, 102, 1)


_CHATTY = """
commands:
  - export N=10000
  - for b in $(seq 0 5); do seq -f "line %06g" $((b*N)) $((b*N + N-1)); sleep 1; done
  - sleep 4; echo the end
"""


def test_output_rotated_away_while_the_collector_was_down_is_put_back_from_the_container(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    """~3 MiB of CRI log printed with no collector running, which is back while the
    container holds on at its end: the kubelet serves only its newest file, yet every
    line is served, in order, from the container's own copy."""
    last = "printf 'the end'"  # no newline: the last line, ended by the collector
    name, out, held_s = _printed_while_the_collector_was_down(
        real_stack, real_kube, tmp_path, "recovered", last
    )
    expected = [f"line {i:06d}" for i in range(60_000)] + ["the end"]
    assert out == expected, (len(out), out[-1:])
    # Each line put back has a time (its neighbour's), as --since and --timestamps need.
    stamped = logs(real_stack, name, "--timestamps").splitlines()
    unstamped = [line for line in stamped if not _STAMPED.match(line)]
    assert len(stamped) == len(expected) and not unstamped, unstamped[:3]
    meta = log_meta(real_stack, real_kube, name)
    # "the end" has no newline: not counted by the container, ended by the collector.
    assert (meta.printed, meta.missing, meta.lines, meta.unended) == (60_000, 0, 60_001, 1)
    assert meta.recovered > 0  # the kubelet no longer had the start
    # The collector let the container go: it did not hold on until logs.hold_s ran out.
    assert held_s < real_stack.settings().logs.hold_s - 5, held_s


def test_output_rotated_away_while_the_collector_was_down_past_the_hold_is_said_missing(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    """The same with the collector down until the run ended (the container held on for
    ``logs.hold_s`` and gave up): a collector back after the run ended can read only
    the end. Every line it got is the output's end, once and in order, and the
    reader's last line says exactly how many of the container's are missing."""
    total = 60_000
    with _collector_down(real_stack):
        name = apply(real_stack, tmp_path, f"type: task\nname: unread{_CHATTY}{SMALL}")
        done = wait_status(real_stack, name, "done", "failed", timeout=3 * START_S)
        assert done["status"] == "done", done
    expected = [f"line {i:06d}" for i in range(total)] + ["the end"]
    # The new collector leads once the killed one's lease lapses, then reads what is left.
    wait_until(
        lambda: log_meta(real_stack, real_kube, name).done, timeout=120, what="output complete"
    )
    out = logs(real_stack, name).splitlines()
    stored, note = out[:-1], out[-1]
    assert 0 < len(stored) < len(expected), f"{len(stored)} lines stored: nothing rotated away?"
    assert stored == expected[-len(stored) :]
    missing = len(expected) - len(stored)
    assert note == (
        f"[berth] {missing:,} of the {len(expected):,} lines this job printed are missing:"
        " the kubelet's log API never served them (its log rotation)"
    )
    meta = log_meta(real_stack, real_kube, name)
    assert (meta.printed, meta.missing) == (len(expected), missing)


# 1.5 MB with no newline: the output's last line, cut at logs.max_line_bytes (1 MiB).
_LONG_LAST = "head -c 1500000 /dev/zero | tr '\\0' x"
_CUT = " [berth] line cut at 1048576 bytes"


def test_a_last_line_longer_than_the_cut_with_no_newline_still_lets_the_container_go(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    """The end line comes glued to the rest of a line the collector cut: it is found
    there, the container is let go at once (not after ``logs.hold_s``), and the cut
    line is counted as the one the collector ended."""
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: long-last
        commands:
          - seq -f "line %06g" 0 29999
          - {_LONG_LAST}
        {SMALL}
        """,
    )
    pod = run(real_stack, name)["jobs"][0]["pod_name"]
    done = wait_status(real_stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", done
    wait_until(
        lambda: log_meta(real_stack, real_kube, name).done, timeout=60, what="output complete"
    )
    out = logs(real_stack, name).splitlines()
    assert out[:-1] == [f"line {i:06d}" for i in range(30_000)], len(out)
    _assert_cut_x_line(out[-1])
    meta = log_meta(real_stack, real_kube, name)
    assert (meta.printed, meta.missing, meta.lines, meta.unended) == (30_000, 0, 30_001, 1)
    # The commands take about a second: the container did not hold on for logs.hold_s.
    ran_s = _exit_s(real_stack, real_kube, pod, None)
    assert ran_s < real_stack.settings().logs.hold_s - 5, ran_s


def test_a_long_last_line_the_kubelet_served_only_the_end_of_is_put_back_whole(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    """With the collector down, the output's last line (no newline, 1.5 MB) began in a
    file the kubelet rotated away: it serves only that line's end, glued to the end
    line. Every line comes back from the container's copy, the last one whole (then
    cut as the collector cuts), and the container is let go."""
    name, out, held_s = _printed_while_the_collector_was_down(
        real_stack, real_kube, tmp_path, "torn-last", _LONG_LAST
    )
    assert out[:-1] == [f"line {i:06d}" for i in range(60_000)], (len(out), out[:1])
    _assert_cut_x_line(out[-1])
    meta = log_meta(real_stack, real_kube, name)
    assert (meta.printed, meta.missing, meta.lines, meta.unended) == (60_000, 0, 60_001, 1)
    assert meta.recovered > 0
    assert held_s < real_stack.settings().logs.hold_s - 5, held_s


def _printed_while_the_collector_was_down(
    stack: Stack, k: kube.Kube, tmp_path: Path, name: str, last: str
) -> tuple[str, list[str], float]:
    """Run _CHATTY, ending with the command ``last`` instead of its echo, with the
    collector down until PID 1 holds on at its end (its end line is served), then
    back. The run's name, the lines ``berth logs`` serves once the output is complete,
    and the seconds from then (the hold had begun) to the container's exit."""
    chatty = _CHATTY.replace("echo the end", last)
    with _collector_down(stack):
        name = apply(stack, tmp_path, f"type: task\nname: {name}{chatty}{SMALL}")
        pod = run(stack, name)["jobs"][0]["pod_name"]
        wait_until(
            lambda: "berth-output-end" in _served_tail(stack, k, pod),
            timeout=3 * START_S,
            what="the container's end line",
        )
        held_from = datetime.now(UTC)
    done = wait_status(stack, name, "done", "failed", timeout=2 * START_S)
    assert done["status"] == "done", done
    wait_until(lambda: log_meta(stack, k, name).done, timeout=60, what="output complete")
    return name, logs(stack, name).splitlines(), _exit_s(stack, k, pod, held_from)


def _assert_cut_x_line(line: str) -> None:
    """The 1.5 MB line of x, from its start, cut at 1 MiB with its timestamp (which the
    reader does not see) and saying so."""
    assert line.endswith(_CUT), line[-80:]
    body = line[: -len(_CUT)]
    assert set(body) == {"x"} and 1_048_576 - 40 < len(body) < 1_048_576, len(body)


def _served_tail(stack: Stack, k: kube.Kube, pod: str) -> str:
    """The kubelet's last lines of the run's output; "" while its container is starting."""
    try:
        text: str = k.call(
            k.core.read_namespaced_pod_log, pod, stack.namespace, container="main", tail_lines=3
        )
    except KubeError:
        return ""
    return text


def _exit_s(stack: Stack, k: kube.Kube, pod: str, since: datetime | None) -> float:
    """From ``since`` (the container's start if None) to its exit. PID 1 says its end
    line again while it holds, and a rotation can take the first out of the served log:
    the test's own time of seeing one bounds the hold's start instead."""
    status = k.call(k.core.read_namespaced_pod, pod, stack.namespace).status
    [main] = [c for c in status.container_statuses if c.name == "main"]
    finished: datetime = main.state.terminated.finished_at
    started: datetime = main.state.terminated.started_at
    return (finished - (since or started)).total_seconds()


@contextlib.contextmanager
def _collector_down(stack: Stack) -> Iterator[None]:
    sigkill(stack, "log-collector")
    try:
        yield
    finally:
        stack.restart("log-collector")
