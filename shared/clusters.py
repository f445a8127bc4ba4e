"""Each project's Kubernetes backend, resolved from the server config once.

Both the API (logs, proxying) and the workers (everything else) need "the
cluster of project P"; this registry builds the clients on first use and keeps
them for the life of the process. Clients are keyed by cluster
(:meth:`KubernetesBackend.cluster_key`), not by project: projects on one cluster
share one client, so one connection pool and one cached credential, and an
``exec`` credential plugin runs once per credential lifetime per process however
many projects and threads use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared import kube
from shared.configuration.server import KubernetesBackend, ServerConfig
from shared.errors import BerthError, KubeCredentialError
from shared.kube.credentials import FAILURE_BACKOFF_S
from shared.kube.recent import RecentReads
from shared.settings import KubeSettings
from shared.state.records import Job

log = logging.getLogger(__name__)

# The settings' default, for callers that predate the field.
_DEFAULT_EXEC_TIMEOUT_S = KubeSettings().exec_timeout_s


@dataclass
class Cluster:
    """One cluster of a project: clients, namespace and its config."""

    kube: kube.Kube
    namespace: str
    backend: KubernetesBackend
    recent: RecentReads = field(default_factory=lambda: RecentReads(0.0))
    """The namespace's slow-changing reads, kept ``kube.namespace_read_ttl_s`` (the API's)."""

    @property
    def name(self) -> str:
        """The cluster's name in the project (its context's; ``default`` for the current)."""
        return self.backend.cluster_name()


def job_cluster(job: Job) -> str | None:
    """The name of the cluster ``job`` is placed in; None: its project's first."""
    return job.placement.cluster if job.placement is not None else None


def run_clusters(jobs: Iterable[Job]) -> list[str | None]:
    """The clusters a run's ``jobs`` were placed in (a run keeps to one; a requeued
    run's earlier placement was cleared), its project's first when none was."""
    found = list(dict.fromkeys(job_cluster(j) for j in jobs if j.placement is not None))
    return found or [None]


class ClusterRegistry:
    def __init__(
        self,
        server: ServerConfig,
        *,
        request_timeout_s: float,
        exec_timeout_s: float = _DEFAULT_EXEC_TIMEOUT_S,
        namespace_read_ttl_s: float = 0.0,
        connections: int = 32,
    ) -> None:
        self.server = server
        self._connections = connections
        self._namespace_read_ttl_s = namespace_read_ttl_s
        self._timeout = request_timeout_s
        self._exec_timeout = exec_timeout_s
        self._lock = threading.Lock()
        self._clusters: dict[tuple[str, str | None], Cluster] = {}
        """By project and cluster name (None: its first): the shared client with the
        project's own namespace and backend there."""
        self._clients: dict[str, kube.Kube] = {}
        """By cluster key: one client per cluster."""
        self._building: dict[str, threading.Lock] = {}
        """By cluster key: held while that client is built (it may run a credential
        plugin), so concurrent first uses build it once; other clusters do not wait."""
        self._failed: dict[str, tuple[float, KubeCredentialError]] = {}
        """By cluster key: a credential plugin that failed at connect, and until when that
        answer stands, so a broken plugin is not run again by every task in between."""

    def for_project(self, project: str, cluster: str | None = None) -> Cluster:
        """``project``'s cluster named ``cluster``, or its first (where a job placed
        before clusters had names runs); ConfigError if none."""
        with self._lock:
            found = self._clusters.get((project, cluster))
        if found is not None:
            return found
        backend = self.server.backend_for(project, cluster)
        made = Cluster(
            kube=self._client(backend),
            namespace=backend.namespace,
            backend=backend,
            recent=RecentReads(self._namespace_read_ttl_s),
        )
        with self._lock:
            return self._clusters.setdefault((project, cluster), made)

    def for_job(self, job: Job) -> Cluster:
        """The cluster ``job`` was placed in (its project's first if never placed)."""
        return self.for_project(job.project, job_cluster(job))

    def name_of(self, job: Job) -> str:
        """The name of the cluster ``job`` was placed in (its project's first if never)."""
        return job_cluster(job) or self.names_of(job.project)[0]

    def key_for(self, project: str, cluster: str | None = None) -> str:
        """A short stable id of ``project``'s cluster ``cluster`` (projects may share one)."""
        return self.server.backend_for(project, cluster).cluster_key()

    def connect_all(self) -> None:
        """Build every project's cluster clients now, and with them load the Kubernetes
        client's modules (~1.5 s of CPU in the API's first submission, in the middle of
        the burst that brought it), so no request pays for them. A cluster that cannot be
        reached now is left to its first use, which reports it."""
        for project in self.server.project_names():
            for name in (None, *self.names_of(project)):
                try:
                    self.for_project(project, name)
                except BerthError as e:
                    log.warning("cluster %s of project %s: not connected yet: %s", name, project, e)

    def names_of(self, project: str) -> list[str]:
        """The names of ``project``'s clusters, in the order runs try them."""
        return [b.cluster_name() for b in self.server.clusters_of(project)]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            self._clusters.clear()

    def _client(self, backend: KubernetesBackend) -> kube.Kube:
        key = backend.cluster_key()
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        # Bounded: connect's work is bounded by the plugin's timeout and file reads.
        with building:
            with self._lock:
                existing = self._clients.get(key)
            if existing is not None:
                return existing
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() < failed[0]:
                e = failed[1]
                raise KubeCredentialError(e.message, plugin=e.plugin, stderr=e.stderr) from e
            try:
                client = kube.connect(
                    kubeconfig=backend.kubeconfig.path(),
                    kubeconfig_data=backend.kubeconfig.parsed_data(),
                    context=backend.context_name(),
                    timeout=self._timeout,
                    exec_timeout_s=self._exec_timeout,
                    connections=self._connections,
                )
            except KubeCredentialError as e:
                self._failed[key] = (time.monotonic() + FAILURE_BACKOFF_S, e)
                raise
            with self._lock:
                self._clients[key] = client
            return client
