"""Each project's Kubernetes backend, resolved from the server config once.

Both the API (logs, proxying) and the workers (everything else) need "the
cluster of project P"; this registry builds the clients on first use and keeps
them for the life of the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from shared import kube
from shared.configuration.server import KubernetesBackend, ServerConfig


@dataclass
class Cluster:
    """One project's Kubernetes backend: clients, namespace and its config."""

    kube: kube.Kube
    namespace: str
    backend: KubernetesBackend


class ClusterRegistry:
    def __init__(self, server: ServerConfig, *, request_timeout_s: float) -> None:
        self.server = server
        self._timeout = request_timeout_s
        self._clusters: dict[str, Cluster] = {}
        self._lock = threading.Lock()

    def for_project(self, project: str) -> Cluster:
        """The first ``type: kubernetes`` backend of ``project``; ConfigError if none."""
        with self._lock:
            found = self._clusters.get(project)
        if found is not None:
            return found
        backend = self.server.backend_for(project)
        k = kube.connect(
            kubeconfig=backend.kubeconfig.path(),
            kubeconfig_data=backend.kubeconfig.parsed_data(),
            context=backend.context_name(),
            timeout=self._timeout,
        )
        cluster = Cluster(kube=k, namespace=backend.namespace, backend=backend)
        with self._lock:
            existing = self._clusters.setdefault(project, cluster)
        if existing is not cluster:
            k.close()  # another thread won the race; keep one client per project
        return existing

    def key_for(self, project: str) -> str:
        """A short stable id of the cluster behind ``project`` (projects may share one)."""
        return self.server.backend_for(project).cluster_key()

    def close(self) -> None:
        with self._lock:
            for cluster in self._clusters.values():
                cluster.kube.close()
            self._clusters.clear()
