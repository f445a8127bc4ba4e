"""Scenario 3: dstack's server on the same local cluster, given the same burst.

Run the whole comparison: ``.venv/bin/python -m bench --only limit,burst,dstack
[--quick]``: one cluster, Berth's stack and a
dstack server side by side, bursts alternating Berth, dstack, Berth, ... so
that drifting background load hits both alike.

How dstack is set up, and why:

- ``dstack[server,kubernetes]==0.22.5`` goes into its own virtualenv
  (``~/.cache/berth/dstack-venv``), made by this module when missing: its
  pins (pydantic, kubernetes, sqlalchemy) must not touch Berth's. If that
  version cannot be installed, the nearest one pip offers is tried and the
  report says so, with pip's error.
- ``HOME`` and ``DSTACK_SERVER_DIR`` point into the bench's temporary
  directory, so nothing of the user's ``~/.dstack`` is read or written.
- ``server/config.yml`` has one project with a ``kubernetes`` backend: the
  cluster's kubeconfig file, the namespace ``dstack``, and Berth's
  ``proxy_jump`` host (127.0.0.1) with the next port, 32023: both tools
  expose their jump host as a NodePort Service, and one cluster cannot give
  port 32022 twice (see ``PROXY_JUMP``).
- No call leaves the machine: the only outbound call the server makes at
  start is gpuhunt's offers-catalog download (``preload_offers_catalog``);
  ``GPUHUNT_CATALOG_URL`` points it at a closed loopback port, so it fails at
  once (one logged error) instead of hanging on a DNS lookup. The Kubernetes
  backend builds its offers from the nodes, not the catalog. Sentry is off
  unless ``DSTACK_SENTRY_DSN`` is set; the version check is only in the CLI.
  Runs use dstack's default image with no ``image:``, so no registry is asked.
- dstack ≥ 0.20 places runs only on fleets, so a backend fleet
  ``nodes: 0..`` on ``kubernetes`` is applied first (as its Kubernetes guide
  shows).

Runs go through the REST API (``POST /api/project/main/runs/apply``, what
``dstack apply -d -y`` ends with), 32 at a time like Berth's. Pods are timed by
a watch on the apiserver; dstack's own statuses are never read, and its pods
never reach its runner (KWOK runs no processes), so both tools are compared on
what both can reach: pod created and pod Running.
"""

from __future__ import annotations

import math
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import burst
from bench.burst import CLIENT_THREADS, GPU_REQUEST, BurstResult, collect, concurrently
from bench.common import Figures, PodTimes, any_objects, ensure_namespace, environ, poll
from cli.local.cluster import ClusterState
from cli.local.processes import ProcessRecord, free_port, is_running, log_tail, start_process
from cli.local.processes import stop_process as _stop_process
from shared import kube
from shared.kube.raw import labels_of
from tests.stack import SHARED_CLIENT_LIMITS

VERSION = "0.22.5"
VENV = Path.home() / ".cache" / "berth" / "dstack-venv"
NAMESPACE = "dstack"
PROJECT = "main"
# Berth's config (tests/stack.py) says 127.0.0.1:32022, and Berth's jump host Service
# takes NodePort 32022. NodePorts are cluster-wide, so dstack's jump pod Service asking
# for the same port gets 422 "provided port is already allocated" and no run ever gets
# a pod. The same host, the next port.
PROXY_JUMP = {"hostname": "127.0.0.1", "port": 32023}
JOB_SELECTOR = "app.kubernetes.io/name=dstack-job"  # dstack's build_base_labels(component="job")
JOB_NAME_LABEL = "k8s.dstack.ai/name"  # "<run>-<job_num>-<replica_num>"
HELD_BACK = {"sentry-sdk": 3}
"""Packages kept below a major version in dstack's venv. dstack 0.22.5 asks for
``sentry-sdk>=2.27`` with no upper bound, and sentry-sdk 3.0 dropped
``start_transaction``, which dstack's background pipelines call for every batch they
fetch: on a machine that installed 3.0, no dstack run ever got a pod (the invocation of
2026-12-07 05:07 UTC, every pipeline failing with that AttributeError)."""
INSTALL_TIMEOUT_S = 1800  # a cold install resolves ~150 packages on a loaded 2-core machine
# dstack places about one run every 2 s here (20 runs in ~40 s on a loaded 2-core
# machine); a burst gets this long per run before the pods still missing are counted
# as not created.
DEADLINE_PER_RUN_S = 3.0
STOP_RESEND_S = 30.0  # see stop_dstack_runs
START_TIMEOUT_S = 180  # migrations on SQLite and backend checks; ~15 s unloaded


class DstackUnavailable(Exception):
    """dstack could not be installed or started here; the message says what failed."""


@dataclass
class DstackServer:
    url: str
    token: str
    version: str
    namespace: str
    record: ProcessRecord
    notes: list[str]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=120,
            limits=SHARED_CLIENT_LIMITS,  # shared by CLIENT_THREADS threads, as Berth's
        )

    def log(self, lines: int = 40) -> str:
        return log_tail(self.record, lines)

    def stop(self) -> None:
        _stop_process(self.record)

    def errors(self, limit: int = 2) -> list[str]:
        """The first ERROR lines of the server's log (not gpuhunt's expected catalog
        failure), each with the apiserver's message when one follows."""
        try:
            lines = Path(self.record.log).read_text(errors="replace").splitlines()
        except OSError:
            return []
        found: list[str] = []
        for i, line in enumerate(lines):
            if not line.startswith("ERROR") or "catalog" in line or "apscheduler" in line:
                continue
            detail = next((m for m in lines[i + 1 : i + 40] if '"message"' in m), "")
            message = re.search(r'"message":"((?:[^"\\]|\\.)*)"', detail)
            text = message.group(1).replace('\\"', '"') if message else ""
            found.append(line[:300] + (f" -> {text}" if text else ""))
            if len(found) >= limit:
                break
        return found


# --- install and start -------------------------------------------------------------------


def ensure_installed(version: str = VERSION) -> tuple[Path, str, list[str]]:
    """The venv's ``dstack`` executable, the installed version, and notes for the report."""
    notes: list[str] = []
    dstack_bin = VENV / "bin" / "dstack"
    installed = _installed_version()
    past = _past_held_back() if installed == version else []  # else installed anew anyway
    if installed == version and not past:
        return dstack_bin, installed, notes
    if past:
        notes.append(f"installed again to hold back {', '.join(past)} (bench/dstack.py HELD_BACK)")
    if not (VENV / "bin" / "python").exists():
        _run(["python3", "-m", "venv", str(VENV)], timeout=300)
    error = _pip_install(version)
    if error:
        nearest = _nearest_version(error, version)
        notes.append(f"`pip install dstack=={version}` failed: {error.strip()[-800:]}")
        if nearest is None:
            raise DstackUnavailable(notes[0])
        notes.append(f"used the nearest available version, {nearest}, instead")
        error = _pip_install(nearest)
        if error:
            raise DstackUnavailable(f"{notes[0]}; {nearest} failed too: {error[-800:]}")
    installed = _installed_version()
    if installed is None:
        raise DstackUnavailable("dstack installed but `import dstack` fails in its venv")
    return dstack_bin, installed, notes


def start_server(
    state: ClusterState, directory: Path, *, namespace: str = NAMESPACE
) -> DstackServer:
    """Configure and start ``dstack server`` on loopback; apply a fleet; wait until it answers."""
    dstack_bin, version, notes = ensure_installed()
    k = kube.connect(kubeconfig=Path(state.kubeconfig), timeout=10.0)
    try:
        ensure_namespace(k, namespace)
    finally:
        k.close()
    home = directory / "home"
    server_dir = home / ".dstack" / "server"
    server_dir.mkdir(parents=True)
    backend = {
        "type": "kubernetes",
        "kubeconfig": {"filename": state.kubeconfig},
        "namespace": namespace,
        "proxy_jump": PROXY_JUMP,
    }
    (server_dir / "config.yml").write_text(
        yaml.safe_dump({"projects": [{"name": PROJECT, "backends": [backend]}]})
    )
    port = free_port()
    token = secrets.token_hex(16)
    env = {
        "HOME": str(home),
        "DSTACK_SERVER_DIR": str(server_dir),
        "DSTACK_SERVER_ADMIN_TOKEN": token,
        "DSTACK_SERVER_LOG_FORMAT": "standard",
        "DSTACK_SERVER_LOG_LEVEL": "INFO",
        "DSTACK_SERVER_RELOAD_DISABLED": "1",
        "DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT": "1",
        # Closed loopback port: the catalog download fails at once, offline.
        "GPUHUNT_CATALOG_URL": f"http://127.0.0.1:{free_port()}",
    }
    argv = [str(dstack_bin), "server", "--host", "127.0.0.1", "--port", str(port)]
    with environ(env, drop=("DSTACK_SENTRY_DSN", "KUBECONFIG", "VIRTUAL_ENV")):
        record = start_process("dstack-server", argv, log_dir=directory / "logs")
    server = DstackServer(
        url=f"http://127.0.0.1:{port}",
        token=token,
        version=version,
        namespace=namespace,
        record=record,
        notes=notes,
    )
    try:
        _wait_ready(server)
        _apply_fleet(server)
    except DstackUnavailable:
        server.stop()
        raise
    return server


def _wait_ready(server: DstackServer) -> None:
    def answers() -> bool:
        if not is_running(server.record):
            raise DstackUnavailable(f"dstack server exited during start-up:\n{server.log(60)}")
        try:
            with server.client() as http:
                return http.post("/api/users/get_my_user", json={}).status_code == 200
        except httpx.HTTPError:
            return False

    if not poll(answers, timeout=START_TIMEOUT_S, interval=0.5):
        raise DstackUnavailable(f"dstack server did not answer in time:\n{server.log(60)}")


def _apply_fleet(server: DstackServer) -> None:
    """A backend fleet on ``kubernetes``: dstack places runs only on fleets since 0.20."""
    configuration = {
        "type": "fleet",
        "name": "k8s",
        "nodes": "0..",  # the Kubernetes backend provisions nothing ahead; pods per job
        "placement": "cluster",
        "backends": ["kubernetes"],
        "resources": {"gpu": "1..8"},
    }
    body = {"plan": {"spec": {"configuration": configuration, "profile": {}}}, "force": True}
    with server.client() as http:
        r = http.post(f"/api/project/{PROJECT}/fleets/apply", json=body)
    if r.status_code != 200:
        raise DstackUnavailable(f"fleet apply: {r.status_code} {r.text[:500]}")


# --- the burst ---------------------------------------------------------------------------


def dstack_burst(k: kube.Kube, server: DstackServer, n: int, prefix: str) -> BurstResult:
    """The same burst as :func:`bench.burst.berth_burst`, through dstack's REST API."""
    pods = PodTimes(k, server.namespace, run_of_pod)
    pods.start()
    names = [f"{prefix}-{i}" for i in range(n)]
    with server.client() as http:

        def submit(name: str) -> tuple[float, float, str]:
            body = {"plan": {"run_spec": run_spec(name)}, "force": True}
            t0 = time.monotonic()
            try:
                r = http.post(f"/api/project/{PROJECT}/runs/apply", json=body)
            except httpx.HTTPError as e:
                return t0, time.monotonic(), f"{name}: {e!r}"
            error = "" if r.status_code == 200 else f"{name}: {r.status_code} {r.text[:300]}"
            return t0, time.monotonic(), error

        return collect(
            pods,
            names,
            lambda: concurrently(submit, names, CLIENT_THREADS),
            deadline_s=max(300.0, DEADLINE_PER_RUN_S * n),
        )


def run_spec(name: str) -> dict[str, Any]:
    """The task Berth's burst submits, as a dstack RunSpec."""
    configuration = {"type": "task", "name": name, "commands": ["train"], "resources": GPU_REQUEST}
    return {"run_name": name, "configuration": configuration}


def run_of_pod(pod: Any) -> str | None:
    labels = labels_of(pod)
    job = labels.get(JOB_NAME_LABEL)
    if labels.get("app.kubernetes.io/name") != "dstack-job" or job is None:
        return None
    return re.sub(r"-\d+-\d+$", "", job)


def stop_dstack_runs(
    k: kube.Kube, server: DstackServer, names: list[str], *, timeout: float
) -> tuple[float, int]:
    """Abort the runs through dstack; seconds until their pods and services are gone, and
    how many stop requests that took.

    The stop is sent again every STOP_RESEND_S while objects remain: dstack 0.22.5 was
    seen to lose an abort of a run still provisioning (its run pipeline wrote
    TERMINATING -> PROVISIONING 0.3 s later, from a stale read), as a user
    re-running ``dstack stop`` would notice. NaN seconds when objects remain after
    ``timeout``; they are then deleted straight from the apiserver so the next burst
    finds the GPUs free.
    """
    start = time.monotonic()
    sent = 0
    with server.client() as http:
        while time.monotonic() - start < timeout:
            http.post(
                f"/api/project/{PROJECT}/runs/stop", json={"runs_names": names, "abort": True}
            )
            sent += 1
            if poll(
                lambda: not any_objects(k, server.namespace, JOB_SELECTOR),
                timeout=min(STOP_RESEND_S, timeout - (time.monotonic() - start)),
                interval=0.2,
            ):
                return time.monotonic() - start, sent
    for delete in (
        k.core.delete_collection_namespaced_pod,
        k.core.delete_collection_namespaced_service,
    ):
        k.call(delete, server.namespace, label_selector=JOB_SELECTOR)
    poll(lambda: not any_objects(k, server.namespace, JOB_SELECTOR), timeout=60)
    return math.nan, sent


# --- helpers -----------------------------------------------------------------------------


def _installed_version() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import dstack.version as v; print(v.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _past_held_back() -> list[str]:
    """The packages of :data:`HELD_BACK` installed at or past their major version."""
    script = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        print(name, m.version(name))\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    proc = _run([str(VENV / "bin" / "python"), "-c", script, *HELD_BACK], timeout=120)
    past = []
    for line in proc.stdout.splitlines():
        name, _, found = line.partition(" ")
        major = re.match(r"\d+", found)
        if major is not None and int(major.group()) >= HELD_BACK.get(name, 1 << 30):
            past.append(f"{name} {found}")
    return past


def _pip_install(version: str) -> str:
    """Install; pip's error output on failure, "" on success."""
    proc = _run(
        [
            str(VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"dstack[server,kubernetes]=={version}",
            *(f"{name}<{major}" for name, major in HELD_BACK.items()),
        ],
        timeout=INSTALL_TIMEOUT_S,
    )
    return "" if proc.returncode == 0 else proc.stderr or proc.stdout


def _nearest_version(pip_error: str, wanted: str) -> str | None:
    """From pip's "(from versions: ...)", the highest version below ``wanted``, else the lowest
    above."""
    m = re.search(r"from versions: ([^)]*)\)", pip_error)
    if m is None:
        return None

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

    versions = [
        v.strip() for v in m.group(1).split(",") if re.fullmatch(r"\d+\.\d+\.\d+", v.strip())
    ]
    below = [v for v in versions if key(v) < key(wanted)]
    above = [v for v in versions if key(v) > key(wanted)]
    if below:
        return max(below, key=key)
    return min(above, key=key) if above else None


def _run(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise DstackUnavailable(f"{' '.join(argv[:3])} did not finish in {timeout:.0f} s") from e


# --- the report --------------------------------------------------------------------------


def add_ratios(berth: BurstResult, dstack: BurstResult, figs: Figures, scenario: str) -> None:
    """Berth over dstack for one repeat: throughputs, and latencies turned so that
    larger is better for Berth."""
    note = "same repeat; goal >= 10x"
    b, d = burst.summary(berth), burst.summary(dstack)
    for what in ("pods created per second", "runs Running per second (end to end)"):
        if d[what]:
            figs.add(scenario, f"ratio: {what}, Berth / dstack", b[what] / d[what], "x", note)
    for what in ("submit->pod created p50", "submit->pod created p99", "submit->Running p50"):
        if b[what] and not math.isnan(d[what]):
            figs.add(scenario, f"ratio: {what}, dstack / Berth", d[what] / b[what], "x", note)


def summary(figs: Figures, notes: list[tuple[str, str]], scenario: str) -> list[str]:
    """How dstack was set up, and the ratios against the 10x goal."""
    ratios = [
        f for f in figs if f.scenario == scenario and f.what.startswith("ratio:") and f.samples
    ]
    lines = [
        f"dstack {VERSION} ran from its own virtualenv (`{VENV}`), its server on loopback",
        "with a `kubernetes` backend on the same kubeconfig, namespace `dstack`, Berth's",
        "`proxy_jump` host with the next port (32023: Berth's jump host Service holds",
        "NodePort 32022, and with the same port dstack's jump Service is refused with 422",
        "and no dstack run ever gets a pod), a `nodes: 0..` backend fleet, and the gpuhunt",
        "catalog URL pointed at a closed loopback port (its only outbound call). The same",
        "burst went through `POST /api/project/main/runs/apply`, 32 requests in flight,",
        "bursts alternating with Berth's. Pods were timed by a watch on the apiserver;",
        "neither tool's own status was read.",
        "",
    ]
    for fig in ratios:
        verdict = "meets" if fig.median >= 10 else "misses"
        lines.append(
            f"- {fig.what.removeprefix('ratio: ')}: **{fig.median:.1f}x** "
            f"({min(fig.samples):.1f}x .. {max(fig.samples):.1f}x), {verdict} the 10x goal"
        )
    if not ratios:
        failed = [text for s, text in notes if s == scenario]
        lines.append("No ratio: " + ("; ".join(failed) or "scenario 3 was not run."))
    return lines
