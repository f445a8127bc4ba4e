"""Issue 16's targets table reads this invocation's figures, and says what it lacks."""

from __future__ import annotations

from bench import targets
from bench.common import Figures


def _row(lines: list[str], figure: str) -> str:
    return next(line for line in lines if line.startswith(f"| {figure} |"))


def test_each_target_says_met_missed_by_how_much_or_not_measured() -> None:
    figs = Figures()
    figs.add("2 burst", "submit->pod created p99", 3.26, "s")
    figs.add("3 dstack", "ratio: submit->pod created p50, dstack / Berth", 56.5, "x")
    figs.add("3 dstack", "ratio: runs Running per second (end to end), Berth / dstack", 18.2, "x")
    figs.add("6 placement", "plan() per run of 20 queued, 5,000 nodes", 0.0015, "s")
    figs.add("7 teardown", "stop 1000 runs -> apiserver holds none of their objects", 44.7, "s")

    lines = targets.rows(figs)

    assert _row(lines, "submit->pod created p99, the burst").endswith(
        "| <= 2.00 s | 3.26 s | missed (1.6x over) |"
    )
    assert _row(lines, "submit->pod created p50, dstack / Berth").endswith("| 56x | met |")
    assert _row(lines, "Berth throughput / dstack (runs Running per second)").endswith(
        "| 18x | missed (2.2x short) |"
    )
    assert _row(lines, "plan() per run, 5,000 nodes").endswith("| 1.50 ms | met |")
    # Found by the start of its name: the teardown figure's name carries its size.
    assert "| 44.7 s | missed (3.0x over) |" in _row(
        lines, "stop 1,000 Running runs -> no objects left"
    )
    assert _row(lines, "first inventory, 1,000 nodes + 10,000 pods").endswith(
        "| not measured here | |"
    )
