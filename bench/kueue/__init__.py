"""Scenario ``peers`` (issue 17): Berth's queue against Kueue's, on one cluster, in one run.

``python -m bench --only peers [--quick] [--peers-jobs N]``. The bench starts
its own cluster from ``bench/kueue/pools.yaml`` (96 KWOK GPUs of three models),
builds Kueue from the Go module proxy (``bench/kueue/build.sh``, cached), and
drains the same ``N`` one-GPU jobs through each system in turn on that cluster
(:mod:`bench.kueue.drain` says how, :mod:`bench.kueue.systems` who). Kueue
goes first; its namespace, manager and webhooks are gone before Berth starts,
so neither sees the other's pods.

Kueue is a peer under test, never a dependency: nothing outside ``bench/``
imports this package, and Berth runs without it.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import fmt
from bench.kueue import manager, systems
from bench.kueue.drain import Drain, Rates, lags, p, rates
from cli.local import cluster
from shared import kube

HERE = Path(__file__).resolve().parent
POOLS = HERE / "pools.yaml"
RUN_FOR_S = 1.0  # each job's pod "runs" this long on KWOK: 96 GPUs could drain 96 jobs/s
TITLE = "Berth against Kueue (scenario 11 peers, bench/kueue, issue 17)"


def run(
    tmp: Path, *, n: int, command: str, workers: int = 2, say: Callable[[str], None] = print
) -> list[str]:
    """Both drains on one cluster; the report section's lines (markdown)."""
    directory = tmp / "peers-cluster"
    say(f"peers: starting the cluster ({POOLS.name}); Kueue {manager.VERSION}")
    say("peers: building Kueue if needed (a cold build takes ~10 min on 2 cores)")
    manager.build()
    state, _ = cluster.up(directory, pools_file=POOLS, timeout_s=600)
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=30.0)
    started, load = time.time(), os.getloadavg()[0]
    try:
        gpus = systems.gpus_by_model(k)
        say(f"peers: Kueue drain of {n} jobs")
        kq = systems.kueue_drain(state, k, tmp / "kueue", n=n, run_for=RUN_FOR_S)
        say(f"peers: Berth drain of {n} jobs")
        berth = systems.berth_drain(
            state, k, tmp / "berth", n=n, run_for=RUN_FOR_S, workers=workers
        )
    finally:
        k.close()
        cluster.down(directory)
    return report(
        berth,
        kq,
        gpus=gpus,
        command=command,
        minutes=(time.time() - started) / 60,
        load_at_start=load,
    )


def report(
    berth: Drain,
    kq: Drain,
    *,
    gpus: dict[str, int],
    command: str,
    minutes: float,
    load_at_start: float,
) -> list[str]:
    b, q = rates(berth), rates(kq)
    q_admit = rates(kq, kq.timeline.admitted)
    n = berth.n
    deep = n - n // 10
    shape = ", ".join(f"{count} {model}" for model, count in sorted(gpus.items()))
    lines = [
        f"Run by hand: `{command}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
        f" {os.cpu_count()} cores, load average {load_at_start:.1f} at the start and"
        f" {os.getloadavg()[0]:.1f} at the end; both"
        f" drains took {minutes:.0f} minutes. One repeat.",
        "",
        f"Cluster: `bench/kueue/pools.yaml`, {sum(gpus.values())} KWOK GPUs ({shape}). Work:"
        f" {n:,} one-GPU jobs of {RUN_FOR_S:g} s each, submitted while blockers hold every GPU"
        " (so all wait), then the blockers are stopped and one high-priority job is submitted"
        f" at depth. Kueue {kq_version()} (ResourceFlavor per model, one ClusterQueue with"
        " those quotas, a LocalQueue, suspended batch/v1 Jobs); Berth at this commit (its API,"
        " project `main`, the cluster as its capacity). Admission = the job's pod created"
        " (Kueue: also the Job unsuspended, shown apart).",
        "",
        "| measurement | Berth | Kueue | Berth / Kueue |",
        "|---|---:|---:|---:|",
        _row(f"submit {n:,} jobs", berth.submit_s, kq.submit_s, "s"),
        _row(
            f"admissions/s at depth (>= {deep:,} waiting)",
            b.depth_per_s,
            q.depth_per_s,
            "/s",
            ratio=True,
        ),
        _row(
            f"admissions/s over the whole drain of {n:,}",
            b.drain_per_s,
            q.drain_per_s,
            "/s",
            ratio=True,
        ),
        _row("Kueue: Jobs unsuspended/s at depth", math.nan, q_admit.depth_per_s, "/s"),
        _row("Kueue: Jobs unsuspended/s, whole drain", math.nan, q_admit.drain_per_s, "/s"),
        *_handover_rows("at depth", b.handover_depth, q.handover_depth),
        *_handover_rows("whole drain", b.handover_all, q.handover_all),
        _row(
            "high-priority job at depth: submitted -> pod created",
            b.urgent_s,
            q.urgent_s,
            "s",
            ratio=True,
        ),
        f"| jobs whose pod came before the high-priority one's | {b.urgent_overtaken} |"
        f" {q.urgent_overtaken} | |",
        _row(
            "CPU of the system's own processes, submit + drain",
            _own(berth.cpu),
            _own(kq.cpu),
            "s",
            ratio=True,
        ),
        _row(
            "... per 1,000 jobs",
            _own(berth.cpu) * 1000 / n,
            _own(kq.cpu) * 1000 / n,
            "s",
            ratio=True,
        ),
        _row(
            "cluster CPU (apiserver, etcd, scheduler, controller-manager, KWOK)",
            _plane(berth.cpu),
            _plane(kq.cpu),
            "s",
            ratio=True,
        ),
        _row(
            "... of which kube-controller-manager",
            berth.cpu.get("cluster kube-controller-manager", math.nan),
            kq.cpu.get("cluster kube-controller-manager", math.nan),
            "s",
        ),
        _row(
            "peak RSS, the system's processes summed",
            sum(berth.rss_mib.values()),
            sum(kq.rss_mib.values()),
            "MiB",
            ratio=True,
        ),
        _row(
            "apiserver requests per job (submit + drain)",
            sum(_calls(berth).values()) / n,
            sum(_calls(kq).values()) / n,
            "",
            ratio=True,
        ),
        _row(
            "admission webhook calls per job",
            sum(v for key, v in berth.requests.items() if key.startswith("WEBHOOK")) / n,
            sum(v for key, v in kq.requests.items() if key.startswith("WEBHOOK")) / n,
            "",
        ),
        *_stage_rows(kq),
        f"| every job finished | {'yes' if berth.finished else 'no'} |"
        f" {'yes' if kq.finished else 'no'} | |",
        "",
        "The apiserver's busiest request kinds over each drain, per job:",
        "",
        *(f"- {d.system}: {_top_requests(d)}" for d in (berth, kq)),
        "",
        "Per process, CPU seconds over submit + drain and peak RSS:",
        "",
        *(f"- {d.system}: {_per_process(d)}" for d in (berth, kq)),
    ]
    notes = [*berth.notes, *kq.notes]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return lines


def kq_version() -> str:
    return manager.VERSION


def write_section(path: Path, lines: list[str]) -> None:
    """Put the section into RESULTS.md in place of the last one (or at the end), leaving
    every other scenario's figures as they were."""
    text = path.read_text() if path.exists() else "# Berth benchmarks\n"
    section = f"## {TITLE}\n\n" + "\n".join(lines) + "\n"
    pattern = re.compile(rf"^## {re.escape(TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _row(what: str, berth: float, kq: float, unit: str, *, ratio: bool = False) -> str:
    shown = (
        "" if not ratio or math.isnan(berth) or math.isnan(kq) or kq == 0 else fmt(berth / kq, "x")
    )
    return f"| {what} | {_cell(berth, unit)} | {_cell(kq, unit)} | {shown} |"


def _cell(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "s":
        return fmt(value, "s") if value < 1 else f"{value:,.2f} s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.1f}{unit}"


def _handover_rows(where: str, berth: list[float], kq: list[float]) -> list[str]:
    return [
        _row(
            f"freed GPU -> next pod created, p50, {where} (n = {len(berth)} / {len(kq)})",
            p(berth, 50),
            p(kq, 50),
            "s",
            ratio=True,
        ),
        _row(
            f"freed GPU -> next pod created, p99, {where}", p(berth, 99), p(kq, 99), "s", ratio=True
        ),
    ]


def _stage_rows(kq: Drain) -> list[str]:
    """Where Kueue's hand-over goes: the Job controller's two steps around Kueue's own."""
    t = kq.timeline
    rows = []
    for what, start, end in (
        ("Kueue path: pod Succeeded -> Job Complete (Job controller)", t.done, t.completed),
        ("Kueue path: Job unsuspended -> its pod created (Job controller)", t.admitted, t.created),
    ):
        values = lags(kq, start, end)
        rows.append(
            f"| {what}, p50 / p99 (n = {len(values)}) | - |"
            f" {_cell(p(values, 50), 's')} / {_cell(p(values, 99), 's')} | |"
        )
    return rows


def _calls(d: Drain) -> dict[str, float]:
    return {key: v for key, v in d.requests.items() if not key.startswith("WEBHOOK")}


def _top_requests(d: Drain, count: int = 8) -> str:
    top = sorted(_calls(d).items(), key=lambda kv: -kv[1])[:count]
    return ", ".join(f"{key} {v / d.n:.2f}" for key, v in top) or "not read"


def _own(cpu: dict[str, float]) -> float:
    return sum(v for name, v in cpu.items() if not name.startswith("cluster "))


def _plane(cpu: dict[str, float]) -> float:
    return sum(v for name, v in cpu.items() if name.startswith("cluster "))


def _per_process(d: Drain) -> str:
    cpu = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in d.cpu.items())
    rss = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in d.rss_mib.items())
    return f"CPU: {cpu}. Peak RSS: {rss}."


__all__ = ["Rates", "run", "write_section"]
