"""``berth log-collector``: lead (or stand by), watch job pods, follow their output."""

from __future__ import annotations

import logging
import threading

from shared import kube
from shared.clusters import ClusterRegistry
from shared.configuration.server import load_server_config
from shared.errors import ConfigError, StoreError
from shared.runlogs.store import LogStore
from shared.settings import LogSettings, Settings
from workers.collector.follow import Follower
from workers.collector.pods import PodView, PodWatch
from workers.collector.target import Target
from workers.lease import LEASE_RENEW_S, Term, run_as_leader

log = logging.getLogger(__name__)

_JOIN_S = 5.0


def run_log_collector(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): standby, leader, and back."""
    run_as_leader(settings, "log-collector", _lead, stop=stop)


def _lead(term: Term) -> None:
    settings, store, lease, stop = term.settings, term.store, term.lease, term.stop
    server = load_server_config(settings.server_config_path)
    clusters = ClusterRegistry(
        server,
        request_timeout_s=settings.kube.request_timeout_s,
        exec_timeout_s=settings.kube.exec_timeout_s,
        connections=settings.logs.connections,
    )
    cap = int(settings.logs.max_mib_per_attempt * 1024 * 1024)
    collector = Collector(LogStore(store, cap_bytes=cap), settings.logs, holder=lease.holder)
    watches: list[PodWatch] = []
    try:
        for project, (k, namespace) in _backends(server.project_names(), clusters).items():
            watch = PodWatch(k, namespace, collector.on_pod_of(k, namespace))
            watch.start()
            watches.append(watch)
            log.info("collecting output of job pods in %s (%s)", namespace, project)
        flusher = threading.Thread(target=collector.flush_loop, name="logs-flush", daemon=True)
        flusher.start()
        term.started()
        while not stop.wait(LEASE_RENEW_S):
            if not lease.renew():
                log.error("lost the log collector lease; back to standby")
                return
    finally:
        for watch in watches:
            watch.stop()
        collector.halt()
        lease.release()
        clusters.close()


class Collector:
    """The followers of one leader term, keyed by (job id, attempt)."""

    def __init__(self, logs: LogStore, settings: LogSettings, *, holder: str) -> None:
        self.logs = logs
        self.settings = settings
        self.holder = holder
        self._lock = threading.Lock()
        self._followers: dict[tuple[str, int], Follower] = {}
        self._stopped = threading.Event()

    def on_pod_of(self, k: kube.Kube, namespace: str) -> _PodHandler:
        return _PodHandler(self, k, namespace)

    def on_pod(self, k: kube.Kube, namespace: str, view: PodView, deleted: bool) -> None:
        """A job pod changed: start following its container, or tell its follower it ended."""
        key = (view.job_id, view.attempt)
        replacing = False
        with self._lock:
            follower = self._followers.get(key)
            if follower is not None and follower.finished.is_set():
                del self._followers[key]
                follower = None
            if follower is not None:
                if not (view.ended or deleted):
                    return
                if not follower.awaiting_headers():
                    follower.container_ended(view.printed)
                    return
                # Its follow waits for a silent container's first bytes and cannot be
                # cut: let it lapse, and read the ended container plainly in a new one,
                # so the output is complete now, not when that wait runs out.
                follower.halt()
                del self._followers[key]
                replacing = True  # the container started: the old follower saw it
            if not (view.started or replacing) or self._stopped.is_set():
                return
            target = Target(
                kube=k,
                namespace=namespace,
                pod=view.name,
                uid=view.uid,
                job_id=view.job_id,
                attempt=view.attempt,
            )
            # A deleted pod's output cannot be read any more: by name, the apiserver
            # answers 404, or with a newer pod's of that name. In a stop of 1,000 runs
            # that read cost a request (and often a connection) per job for nothing.
            follower = Follower(
                target,
                logs=self.logs,
                settings=self.settings,
                holder=self.holder,
                gone=deleted,
                printed=view.printed,
            )
            if view.ended or deleted:
                follower.ended.set()  # read it plainly from the start
            self._followers[key] = follower
        follower.start()

    def flush_loop(self) -> None:
        """Store lines that have waited ``flush_interval_s``, however quiet their stream."""
        while not self._stopped.wait(self.settings.flush_interval_s / 2):
            for follower in self.live_followers():
                try:
                    follower.flush_if_due()
                except StoreError as e:  # the follower sees it too and reads again later
                    log.warning("flushing output failed: %s", e)

    def live_followers(self) -> list[Follower]:
        """The followers still copying, after letting go of those that have finished.

        Finished ones used to stay until their pod's next event, which usually never
        came: in a 2,000-job drain the flusher walked every follower ever started 20
        times a second (a fifth of the collector's CPU), and a long-lived collector
        kept one per attempt ever run."""
        with self._lock:
            done = [key for key, f in self._followers.items() if f.finished.is_set()]
            for key in done:
                del self._followers[key]
            return list(self._followers.values())

    def halt(self) -> None:
        self._stopped.set()
        with self._lock:
            followers = list(self._followers.values())
            self._followers.clear()
        for follower in followers:
            follower.halt()
        for follower in followers:
            follower.join(_JOIN_S)


class _PodHandler:
    """``on_pod`` bound to one namespace's client, for :class:`PodWatch`."""

    def __init__(self, collector: Collector, k: kube.Kube, namespace: str) -> None:
        self.collector, self.k, self.namespace = collector, k, namespace

    def __call__(self, view: PodView, deleted: bool) -> None:
        self.collector.on_pod(self.k, self.namespace, view, deleted)


def _backends(projects: list[str], clusters: ClusterRegistry) -> dict[str, tuple[kube.Kube, str]]:
    """One (client, namespace) per distinct cluster and namespace the projects use, by
    "project, cluster" (the first project using each)."""
    seen: set[tuple[str, str]] = set()
    out: dict[str, tuple[kube.Kube, str]] = {}
    for project in projects:
        try:
            names = clusters.names_of(project)
        except ConfigError as e:
            log.warning("project %s has no cluster; its output is not collected: %s", project, e)
            continue
        for name in names:
            try:
                cluster = clusters.for_project(project, name)
            except ConfigError as e:
                log.warning(
                    "cluster %s of project %s is not usable; its output is not collected: %s",
                    name,
                    project,
                    e,
                )
                continue
            key = (cluster.backend.cluster_key(), cluster.namespace)
            if key not in seen:
                seen.add(key)
                out[f"project {project}, cluster {name}"] = (cluster.kube, cluster.namespace)
    return out
