"""Multi-node order and end on real pods: startup_order, stop_criteria, and an entrypoint.

The order is read from the run's own events (each has its time): a node that
must wait gets its pod only after the nodes it follows were seen Running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.placement.node_order import MASTER_DONE_REASON
from tests.realnode.world import SMALL, START_S, apply, events, wait_status
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.realnode]


def _first(events: list[dict[str, Any]], job: int, starts: str) -> float:
    return float(
        min(e["at"] for e in events if e["job"] == job and e["message"].startswith(starts))
    )


@pytest.mark.parametrize(
    ("order", "first", "then"), [("workers-first", 1, 0), ("master-first", 0, 1)]
)
def test_startup_order_creates_the_waiting_nodes_pod_only_once_the_others_run_and_master_done_ends_the_task(  # noqa: E501
    real_stack: Stack, tmp_path: Path, order: str, first: int, then: int
) -> None:
    name = apply(
        real_stack,
        tmp_path,
        f"""
        type: task
        name: {order}
        nodes: 2
        startup_order: {order}
        stop_criteria: master-done
        # dstack's Docker-like form: the script is the one argument after `-c`.
        entrypoint: /bin/sh -c
        commands:
          - |
            if [ "$DSTACK_NODE_RANK" = 0 ]; then echo master-ran; exit 0; fi
            exec sleep 3600
        {SMALL}
        """,
    )
    # The worker sleeps for an hour: only master-done can end the task this soon.
    final = wait_status(real_stack, name, "done", "failed", "terminated", timeout=2 * START_S)
    assert final["status"] == "done", final
    jobs = {j["job_num"]: j for j in final["jobs"]}
    assert jobs[0]["status"] == "done" and jobs[0]["exit_code"] == 0, jobs
    assert jobs[1]["status"] == "done" and jobs[1]["reason"] == MASTER_DONE_REASON, jobs
    seen = events(real_stack, name)
    ran = _first(seen, first, f"job {first} running")
    created = _first(seen, then, "pod ")
    assert ran <= created, (order, seen)
