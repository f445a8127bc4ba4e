"""Where a burst's CPU goes, per run and per process, and what that bounds.

Every process on this machine shares the same cores, so the CPU all of them spend
per run bounds the end-to-end rate: at most cores / (CPU per run). Two windows are
counted: the burst (first submit -> every pod Running, which the Running/s figure
times) and the whole of it (its stop included). In the burst window, the cluster's
CPU alone (apiserver, etcd, KWOK, ...) and the benchmark's own give the rate the
machine would allow if Berth cost nothing at all: a bound on the Running/s over
the limit figure that no change to Berth can pass.
"""

from __future__ import annotations

import os

from bench.common import Figures, cpu_seconds
from bench.teardown import owner
from cli.local import cluster
from tests.stack import Stack

_BENCH = "this benchmark (submits, stops, its pod watch)"


class BurstCpu:
    """CPU seconds per process from :meth:`start`, at :meth:`running` and at :meth:`done`."""

    def __init__(self, stack: Stack, state: cluster.ClusterState) -> None:
        self.berth = {f"berth {r.name}": r.pid for r in stack.processes}
        # Redis is Berth's store: its CPU is Berth's, though the local cluster starts it.
        owned = {owner(name): r.pid for name, r in state.processes.items()}
        self.berth.update({name: pid for name, pid in owned.items() if name.startswith("berth ")})
        self.plane = {name: pid for name, pid in owned.items() if name.startswith("cluster ")}
        # The instrument shares the cores too; shown so its weight is known, counted in
        # neither Berth's total nor the cluster's.
        self.pids = {**self.berth, **self.plane, _BENCH: os.getpid()}
        self._start: dict[str, float] = {}
        self._running: dict[str, float] | None = None

    def start(self) -> None:
        self._start = self._now()

    def running(self) -> None:
        """Every pod of the burst runs: the end of the burst window."""
        self._running = self._now()

    def done(self, figs: Figures, scenario: str, n: int) -> None:
        """Add the figures of the whole burst (stop included) and of its burst window."""
        end = self._now()
        whole = self._ms_per_run(end, n)
        for name, ms in sorted(whole.items()):
            if ms > 0:
                figs.add(scenario, f"CPU per run: {name}", ms, "ms")
        berth, plane = self._totals(whole)
        figs.add(scenario, "CPU per run: all of Berth's processes", berth, "ms")
        figs.add(scenario, "CPU per run: the cluster (apiserver, etcd, KWOK, ...)", plane, "ms")
        cores = os.cpu_count() or 1
        figs.add(
            scenario,
            "ceiling from CPU per run (cores / CPU per run)",
            cores * 1000 / (berth + plane),
            "/s",
            note=f"{cores} cores; submit, run and stop all counted",
        )
        if self._running is None:
            return
        window = self._ms_per_run(self._running, n)
        berth, plane = self._totals(window)
        bench = window[_BENCH]
        figs.add(scenario, "burst window CPU per run: all of Berth's processes", berth, "ms")
        figs.add(scenario, "burst window CPU per run: the cluster", plane, "ms")
        figs.add(scenario, "burst window CPU per run: this benchmark", bench, "ms")
        figs.add(
            scenario,
            "Running/s the cores allow in the burst window",
            cores * 1000 / (berth + plane + bench),
            "/s",
            note="cores / (Berth + cluster + benchmark CPU per run, submit -> all Running)",
        )
        figs.add(
            scenario,
            "Running/s the cores would allow if Berth cost nothing",
            cores * 1000 / (plane + bench),
            "/s",
            note="cores / (cluster + benchmark CPU per run in the burst window)",
        )

    def _now(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def _ms_per_run(self, at: dict[str, float], n: int) -> dict[str, float]:
        """Milliseconds of CPU per run from :meth:`start` to ``at``, per process."""
        return {name: (at[name] - self._start[name]) / n * 1000 for name in self.pids}

    def _totals(self, per_run: dict[str, float]) -> tuple[float, float]:
        return (
            sum(per_run[name] for name in self.berth),
            sum(per_run[name] for name in self.plane),
        )
