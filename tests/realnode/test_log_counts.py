"""Each run container counts its own output, so a reader is told exactly what the kubelet lost.

The count is PID 1's (workers/supervisor.py), in the container's termination message;
the collector compares it with what it stored (workers/collector/follow.py). On the
real nodes the kubelet rotates at 1 MiB and keeps two files, and its log API serves
only the newest: what a collector does not read in time is gone, and now said.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import kube
from tests.polling import wait_until
from tests.realnode.world import SMALL, START_S, apply, log_meta, logs, sigkill, wait_status
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


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


def test_output_the_kubelet_rotated_away_while_the_collector_was_down_is_said_missing(
    real_stack: Stack, real_kube: kube.Kube, tmp_path: Path
) -> None:
    """~3 MiB of CRI log printed with no collector running: the kubelet rotates at 1 MiB
    and serves only its newest file, so a collector back after the run ended can read
    only the end. Every line it got is the output's end, once and in order, and the
    reader's last line says exactly how many of the container's are missing."""
    total = 60_000
    with _collector_down(real_stack):
        name = apply(
            real_stack,
            tmp_path,
            f"""
            type: task
            name: unread
            commands:
              - export N=10000
              - for b in $(seq 0 5); do seq -f "line %06g" $((b*N)) $((b*N + N-1)); sleep 1; done
              - sleep 4; echo the end
            {SMALL}
            """,
        )
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


@contextlib.contextmanager
def _collector_down(stack: Stack) -> Iterator[None]:
    sigkill(stack, "log-collector")
    try:
        yield
    finally:
        stack.restart("log-collector")
