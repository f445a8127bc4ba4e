"""What every scenario shares: figures over repeats, percentiles, peak RSS, pod watches.

A :class:`Figure` is one number measured once per repeat; the table shows the
median of the repeats and their spread (lowest to highest), so a reader sees
at once whether a difference is larger than the noise. Percentiles inside one
repeat (p50, p99 of 500 submissions) are nearest-rank, so "p99 of 40" is the
largest but one, never an interpolation between two samples.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from cli.local import cluster
from cli.local.processes import free_port, start_process, stop_process
from shared import kube
from shared.errors import KubeConflict, KubeNotFound
from shared.kube.raw import dig, undeclared


@dataclass
class Figure:
    """One measured quantity of one scenario, one sample per repeat."""

    scenario: str
    what: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    text: str | None = None
    """Shown instead of numbers: "skipped", "TODO ...", "failed: ..."."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan


class Figures:
    """Figures keyed by (scenario, what), in the order first added."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Figure] = {}

    def add(self, scenario: str, what: str, value: float, unit: str, note: str = "") -> None:
        key = (scenario, what)
        fig = self._by_key.get(key)
        if fig is None:
            fig = self._by_key[key] = Figure(scenario, what, unit, note=note)
        if note and not fig.note:
            fig.note = note
        if not math.isnan(value):
            fig.samples.append(value)

    def text(self, scenario: str, what: str, text: str, note: str = "") -> None:
        key = (scenario, what)
        if key not in self._by_key:
            self._by_key[key] = Figure(scenario, what, "", note=note, text=text)

    def get(self, scenario: str, what: str) -> Figure | None:
        return self._by_key.get((scenario, what))

    def __iter__(self) -> Iterator[Figure]:
        return iter(self._by_key.values())


# --- numbers -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100; NaN for no samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "s" and value < 1:
        return f"{value * 1e3:.0f} ms" if value >= 0.01 else f"{value * 1e3:.2f} ms"
    if unit.startswith("of "):  # a count: "40 of 40"
        return f"{value:.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    if abs(value) < 0.1 and value != 0:
        digits = 3
    return f"{value:.{digits}f} {unit}".rstrip()


def spread(fig: Figure) -> str:
    if len(fig.samples) < 2:
        return ""
    return f"{fmt(min(fig.samples), fig.unit)} .. {fmt(max(fig.samples), fig.unit)}"


_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(ms|s|µs|us|x|/s|KiB|MiB|%)?")
_TO_BASE = {"ms": ("s", 1e-3), "µs": ("s", 1e-6), "us": ("s", 1e-6), "s": ("s", 1.0)}


def parse_cell(cell: str) -> tuple[float, str] | None:
    """A figure printed by another bench ("12.3 ms", "41/s", "7x") as (value, unit)."""
    m = _NUMBER.match(cell)
    if m is None:
        return None
    value, unit = float(m.group(1)), m.group(2) or ""
    if unit in _TO_BASE:
        base, scale = _TO_BASE[unit]
        return value * scale, base
    rest = cell[m.end() :].strip()
    if not unit and rest:
        unit = rest  # "245 publishes"
    return value, unit


def add_rows(figs: Figures, scenario: str, rows: list[tuple[str, str, str, str]]) -> None:
    """Rows (what, p50 or value, p99, note) from bench.queue / bench.inventory as figures."""
    for what, first, p99, note in rows:
        parsed = parse_cell(first)
        if parsed is None:
            figs.text(scenario, what, first, note)
            continue
        label = f"{what} (p50)" if p99 else what
        figs.add(scenario, label, parsed[0], parsed[1], note)
        parsed99 = parse_cell(p99) if p99 else None
        if parsed99 is not None:
            figs.add(scenario, f"{what} (p99)", parsed99[0], parsed99[1])


# --- processes ---------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) so far; NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Every descendant PID (Celery prefork children, uvicorn workers), depth first."""
    found: list[int] = []
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return found
    for child in (int(p) for p in text.split()):
        found.append(child)
        found.extend(children_of(child))
    return found


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load average at start": load,
    }


# --- the apiserver -----------------------------------------------------------------------


class PodTimes:
    """A watch on one namespace: when each pod (keyed by ``key_of``, given the pod's
    JSON) was first seen created and first seen Running, in ``time.monotonic()`` seconds.

    It lists first and watches from that list's resourceVersion, so no pod
    created after :meth:`start` returns is missed. Events stay the apiserver's JSON:
    with a client ``V1Pod`` built for each, the benchmark took 3.86 ms of CPU per run
    in a 500-run burst, with JSON 2.78 ms, on the cores the measured processes share.
    """

    def __init__(self, k: kube.Kube, namespace: str, key_of: Callable[[Any], str | None]) -> None:
        self._k = k
        self._ns = namespace
        self._key_of = key_of
        self.created: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="pod-watch")
        self._rv = ""

    def start(self) -> None:
        listed = self._k.call_json(self._k.core.list_namespaced_pod, self._ns)
        self._rv = str(dig(listed, "metadata", "resourceVersion") or "")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def wait_running(self, keys: set[str], timeout: float, *, stall_s: float | None = None) -> bool:
        """Until every pod of ``keys`` runs (True), ``timeout`` passes, or, with
        ``stall_s``, no new pod has started running for that long: a tool that
        will not start the rest must not cost the whole deadline of every repeat."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen, progressed = len(self.running), time.monotonic()
            while not keys <= self.running.keys():
                now = time.monotonic()
                if now >= deadline or (stall_s is not None and now - progressed >= stall_s):
                    return False
                self._cond.wait(timeout=min(1.0, deadline - now))
                if len(self.running) != seen:
                    seen, progressed = len(self.running), time.monotonic()
            return True

    def wait_created(self, keys: set[str], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: keys <= self.created.keys(), timeout)

    def _follow(self) -> None:
        w = watch.Watch()
        while not self._stop.is_set():
            try:
                for event in w.stream(
                    undeclared(self._k.core.list_namespaced_pod, self._ns),
                    resource_version=self._rv,
                    timeout_seconds=5,  # short, so stop() is noticed within seconds
                    _request_timeout=15,
                ):
                    self._seen(event)
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as e:
                if e.status == 410:
                    self._rv = ""  # expired: a new list would be needed; watch from now
                time.sleep(0.2)
            except (urllib3.exceptions.HTTPError, OSError):
                time.sleep(0.2)  # the connection broke: watch again from the last version

    def _seen(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        pod = event["object"]
        if event["type"] in ("ERROR", "BOOKMARK") or not isinstance(pod, dict):
            return
        self._rv = dig(pod, "metadata", "resourceVersion") or self._rv
        key = self._key_of(pod)
        if key is None or event["type"] == "DELETED":
            return
        with self._cond:
            self.created.setdefault(key, now)
            if dig(pod, "status", "phase") == "Running":
                self.running.setdefault(key, now)
            self._cond.notify_all()


def ensure_namespace(k: kube.Kube, name: str, *, timeout: float = 30) -> None:
    """Create ``name`` (if absent) and wait for its default ServiceAccount."""
    with contextlib.suppress(KubeConflict):
        k.call(k.core.create_namespace, {"metadata": {"name": name}})
    deadline = time.monotonic() + timeout
    while True:  # the ServiceAccount admission plugin refuses pods until it exists
        try:
            k.call(k.core.read_namespaced_service_account, "default", name)
            return
        except KubeNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def any_objects(k: kube.Kube, namespace: str, selector: str) -> bool:
    """Whether a pod, secret or service matching ``selector`` is left in ``namespace``.

    ``limit=1`` keeps each poll cheap while a thousand objects still exist.
    """
    return any(
        k.call(lister, namespace, label_selector=selector, limit=1).items
        for lister in (
            k.core.list_namespaced_pod,
            k.core.list_namespaced_secret,
            k.core.list_namespaced_service,
        )
    )


@contextmanager
def environ(values: dict[str, str], *, drop: tuple[str, ...] = ()) -> Iterator[None]:
    """Environment variables for a block. ``start_process`` spawns with the caller's
    environment (as tests/stack.py relies on), and bench.queue and bench.inventory find
    this run's cluster through ``BERTH_HOME``, which they read through Settings."""
    old = dict(os.environ)
    os.environ.update(values)
    for name in drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def poll(check: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


# --- the table and RESULTS.md ------------------------------------------------------------


def table(figs: Figures) -> str:
    """A Markdown table, scenarios in order, one row per figure."""
    rows = ["| scenario | measurement | median | spread (low .. high) | n | note |"]
    rows.append("|---|---|---:|---|---:|---|")
    for fig in sorted(figs, key=lambda f: f.scenario.split()[0]):
        if fig.text is not None:
            rows.append(f"| {fig.scenario} | {fig.what} | {fig.text} | | | {fig.note} |")
            continue
        median = fmt(fig.median, fig.unit)
        rows.append(
            f"| {fig.scenario} | {fig.what} | {median} | {spread(fig)} | {len(fig.samples)} "
            f"| {fig.note} |"
        )
    return "\n".join(rows)


def results_markdown(
    *,
    figs: Figures,
    facts: dict[str, str],
    command: str,
    sizes: str,
    seconds: float,
    sections: list[tuple[str, list[str]]],
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Berth benchmarks",
        "",
        f"Reproduce with `{command}` (`make bench` runs the full sizes).",
        f"Run {when}; it took {seconds / 60:.1f} minutes. Sizes: {sizes}.",
        "",
        "Every figure is the median of the repeats, with the lowest and highest repeat as its",
        "spread; p50 and p99 are nearest-rank percentiles within one repeat. Every comparison",
        "was made on this machine, in this one invocation.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "## Figures",
        "",
        table(figs),
    ]
    for title, body in sections:
        if body:
            lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"


@contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` of the bench's own on a free loopback port, stopped by PID after."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        record = start_process(
            "redis", cluster.redis_argv(port, Path(data)), log_dir=Path(data) / "logs"
        )
        try:
            client = redis.Redis(port=port, socket_timeout=5)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(record)
