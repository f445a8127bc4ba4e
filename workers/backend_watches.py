"""The proxy worker's watches, one per thing to watch, following each backend's access mode.

What to watch depends on what Berth may read (:mod:`shared.policy.access`):

- ``cluster`` mode: one :class:`~workers.inventory_watch.InventoryWatcher` per
  cluster (nodes and every pod), publishing the GPU inventory, however many
  projects and namespaces share it;
- ``namespace`` mode: one per namespace, on its pods only, so Berth's job pods
  still wake ``sync_job`` within moments; no inventory;
- ``none``: no watch at all (every call would be refused).

:meth:`BackendWatches.refresh` runs on every lease renewal; it costs one Redis
read per project while the access answers are fresh, and starts, stops or
swaps watchers when a mode changed (an operator granted or revoked a role). A
watcher refused with 403 asks for a new access review (``access.forget``)
and waits ``kube.forbidden_retry_s`` itself, so a revoked role is seen within
seconds and never retried in a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import kube
from shared.clusters import ClusterRegistry
from shared.errors import BerthError
from shared.gpu.inventory import GpuInventory
from shared.policy import access
from shared.settings import Settings
from shared.state.store import Store
from workers.inventory_watch import InventoryWatcher, WatchSettings

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 2.0  # bounded so a swap never delays the lease renewal past its margin

Publish = Callable[[str, GpuInventory], None]
"""Called with (cluster key, snapshot)."""
OnBerthPod = Callable[[str, str, Any], None]


@dataclass(frozen=True)
class WatchKey:
    cluster: str
    namespace: str | None
    """None: the whole cluster (cluster mode); a name: that namespace's pods only."""


class BackendWatches:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clusters: ClusterRegistry,
        *,
        publish: Publish,
        on_berth_pod: OnBerthPod,
    ) -> None:
        self._settings = settings
        self._store = store
        self._clusters = clusters
        self._publish = publish
        self._on_berth_pod = on_berth_pod
        self._watchers: dict[WatchKey, InventoryWatcher] = {}
        self._clients: dict[str, kube.Kube] = {}
        """Cluster key -> the client its watches use (``workers.cluster_health`` probes)."""

    def refresh(self) -> None:
        """Start what should run, stop what should not; idempotent."""
        wanted = self.wanted()
        for key in [k for k in self._watchers if k not in wanted]:
            log.info("stopping the watch of %s", _show(key))
            self._watchers.pop(key).stop(timeout=_STOP_TIMEOUT_S)
        for key, (project, name) in wanted.items():
            if key not in self._watchers:
                try:
                    self._watchers[key] = self._start(key, project, name)
                except BerthError as e:  # a credential plugin failing: tried at the next refresh
                    log.warning("cannot watch %s: %s", _show(key), e)

    def wanted(self) -> dict[WatchKey, tuple[str, str]]:
        """Each thing to watch, with one project that reaches it and its name for the
        cluster: every cluster of every project."""
        wanted: dict[WatchKey, tuple[str, str]] = {}
        for project in self._clusters.server.project_names():
            try:
                names = self._clusters.names_of(project)
            except BerthError as e:
                log.warning("cannot tell what to watch for project %s: %s", project, e)
                continue
            for name in names:
                key = self._wanted_in(project, name)
                if key is not None:
                    wanted.setdefault(key, (project, name))
        return wanted

    def _wanted_in(self, project: str, name: str) -> WatchKey | None:
        try:
            cluster = self._clusters.key_for(project, name)
            found = access.access_for(
                self._store,
                self._clusters,
                project,
                recheck_s=self._settings.kube.access_recheck_s,
                cluster=name,
            )
        except BerthError as e:
            log.warning("cannot tell what to watch in cluster %s of %s: %s", name, project, e)
            return None
        if found.mode == access.Mode.NONE:
            return None
        namespace = None
        if found.mode == access.Mode.NAMESPACE:
            namespace = self._clusters.server.backend_for(project, name).namespace
        return WatchKey(cluster, namespace)

    def clients(self) -> dict[str, kube.Kube]:
        """Cluster key -> a client, for every cluster watched now."""
        watched = {key.cluster for key in list(self._watchers)}  # called from another thread
        return {key: k for key, k in dict(self._clients).items() if key in watched}

    def stop(self) -> None:
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers.clear()

    def _start(self, key: WatchKey, project: str, name: str) -> InventoryWatcher:
        log.info("watching %s", _show(key))

        def publish(inventory: GpuInventory) -> None:
            self._publish(key.cluster, inventory)

        def on_forbidden(_kind: str) -> None:
            access.forget(self._store, self._clusters, project, name)

        client = self._clusters.for_project(project, name).kube
        self._clients[key.cluster] = client
        watcher = InventoryWatcher(
            client,
            publish=publish,
            on_berth_pod=self._on_berth_pod,
            settings=WatchSettings(forbidden_retry_s=self._settings.kube.forbidden_retry_s),
            namespace=key.namespace,
            on_forbidden=on_forbidden,
        )
        watcher.start()
        return watcher


def _show(key: WatchKey) -> str:
    if key.namespace is None:
        return f"cluster {key.cluster} (nodes and pods)"
    return f"namespace {key.namespace} of cluster {key.cluster} (its pods)"
