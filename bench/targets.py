"""Issue 16's throughput targets, read from this invocation's figures.

One row per target: where the issue started, the target, what this invocation
measured, and whether it is met (or by how much it is missed). A target whose
scenario did not run says so instead of repeating an older figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.common import Figure, Figures, fmt

TITLE = "Issue 16 targets (this invocation)"


@dataclass(frozen=True)
class Target:
    figure: str
    scenario: str
    what: str
    """The figure's name, or its start (names that carry a size end in it)."""
    then: str
    """The issue's starting figure (2026-11-29)."""
    limit: float
    unit: str
    higher_is_better: bool


TARGETS = (
    Target(
        "Running/s end to end / raw pod creates/s",
        "2 burst",
        "end-to-end throughput as a fraction of the limit",
        "0.16x",
        0.5,
        "x",
        True,
    ),
    Target(
        "submit->pod created p50, dstack / Berth",
        "3 dstack",
        "ratio: submit->pod created p50, dstack / Berth",
        "5.3x",
        30.0,
        "x",
        True,
    ),
    Target(
        "Berth throughput / dstack (runs Running per second)",
        "3 dstack",
        "ratio: runs Running per second (end to end), Berth / dstack",
        "14.7x",
        40.0,
        "x",
        True,
    ),
    Target(
        "submit->pod created p99, the burst",
        "2 burst",
        "submit->pod created p99",
        "21.4 s",
        2.0,
        "s",
        False,
    ),
    Target(
        "plan() per run, 1,000 nodes",
        "6 placement",
        "plan() per run of 20 queued, 1,000 nodes",
        "12 ms",
        0.002,
        "s",
        False,
    ),
    Target(
        "plan() per run, 5,000 nodes",
        "6 placement",
        "plan() per run of 20 queued, 5,000 nodes",
        "66 ms",
        0.005,
        "s",
        False,
    ),
    Target(
        "first inventory, 1,000 nodes + 10,000 pods",
        "5 inventory",
        "time to first inventory",
        "21 s",
        3.0,
        "s",
        False,
    ),
    Target(
        "proxy worker peak RSS at that size",
        "5 inventory",
        "proxy worker peak RSS",
        "600 MiB",
        250.0,
        "MiB",
        False,
    ),
    Target(
        "stop 1,000 Running runs -> no objects left",
        "7 teardown",
        "stop ",
        "62 s",
        15.0,
        "s",
        False,
    ),
)


def rows(figs: Figures) -> list[str]:
    """The targets table, and what it leaves out."""
    out = [
        "| figure | at the start | target | measured | met |",
        "|---|---:|---:|---:|---|",
    ]
    for target in TARGETS:
        found = _find(figs, target)
        bound = (">= " if target.higher_is_better else "<= ") + fmt(target.limit, target.unit)
        if found is None or math.isnan(found.median):
            out.append(f"| {target.figure} | {target.then} | {bound} | not measured here | |")
            continue
        value = found.median
        out.append(
            f"| {target.figure} | {target.then} | {bound} | {fmt(value, target.unit)} "
            f"| {_verdict(target, value)} |"
        )
    out += [
        "",
        "Not in this table: the inventory read per pass (scenario 6 reads only the",
        "snapshot's version when it is unchanged), and freed GPU -> next pod at depth, which",
        "scenario 11 (`--only peers`) measures beside Kueue.",
    ]
    return out


def _find(figs: Figures, target: Target) -> Figure | None:
    exact = figs.get(target.scenario, target.what)
    if exact is not None:
        return exact
    return next(
        (f for f in figs if f.scenario == target.scenario and f.what.startswith(target.what)),
        None,
    )


def _verdict(target: Target, value: float) -> str:
    if target.higher_is_better:
        return "met" if value >= target.limit else f"missed ({target.limit / value:.1f}x short)"
    return "met" if value <= target.limit else f"missed ({value / target.limit:.1f}x over)"
