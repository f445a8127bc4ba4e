"""Berth's long-lived processes freeze what their start built (shared/startup_heap.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.polling import wait_until
from tests.stack import Stack

pytestmark = pytest.mark.integration

_FROZEN = re.compile(r"(\d+) start-up objects frozen after (.+) \(\d+ ms\)")


def _frozen(stack: Stack, process: str) -> dict[str, int]:
    """What the process's log says it froze, by moment."""
    record = next(p for p in stack.processes if p.name == process)
    text = Path(record.log).read_text(errors="replace")
    return {m[2]: int(m[1]) for m in _FROZEN.finditer(text)}


@pytest.mark.parametrize(
    ("process", "moments"),
    [
        ("api", {"the API's start", "connecting the API's clusters"}),
        ("worker-0", {"the worker's warm-up"}),
        ("proxy-worker", {"the proxy worker's start"}),
        ("log-collector", {"the log collector's start"}),
    ],
)
def test_a_long_lived_process_freezes_what_its_start_built(
    stack: Stack, process: str, moments: set[str]
) -> None:
    def all_said() -> dict[str, int] | None:
        seen = _frozen(stack, process)
        return seen if seen.keys() == moments else None

    frozen = wait_until(
        all_said,
        timeout=60,
        what=f"{process} to freeze its start-up objects",
    )
    # FastAPI, pydantic and the Kubernetes client: far more than any request makes.
    assert min(frozen.values()) > 50_000, frozen
