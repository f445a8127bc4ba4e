"""Publishing and reading the live GPU inventory through Redis.

The proxy worker owns the watch and publishes ``inventory:<cluster>`` (a JSON
snapshot) plus a message on the ``inventory-changed`` channel. Readers take
the snapshot; when none has been published yet (the proxy worker is starting)
they list nodes and pods once themselves, so scheduling never blocks on it.

Only pods Berth did not create are counted in a published snapshot: Berth's
own jobs are subtracted by the scheduler from its placements, which are known
before their pods exist.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared import kube
from shared.clusters import ClusterRegistry
from shared.gpu.inventory import GpuInventory, build_inventory
from shared.kube.raw import as_raw, labels_of
from shared.state.store import Store

CHANNEL = "inventory-changed"


def is_foreign_pod(pod: Any) -> bool:
    """True for pods that count against free capacity: every pod but a Berth job's.

    A job's pod is accounted by its placement (reserved from the moment the
    queue places it, before the pod exists). Berth's other pods, the jump
    host's, have no placement and count like anyone else's: on a two-core real
    node the jump pod's 10m is what decides whether a one-CPU run still fits.
    """
    return is_foreign(labels_of(as_raw(pod)))


def is_foreign(labels: Mapping[str, str]) -> bool:
    """:func:`is_foreign_pod` given the pod's labels."""
    return labels.get(kube.LABEL_MANAGED) != kube.MANAGED_BY or kube.LABEL_JOB not in labels


def publish_inventory(store: Store, cluster_key: str, inventory: GpuInventory) -> None:
    store.publish_inventory(cluster_key, inventory.to_json(), CHANNEL)


def load_inventory(
    store: Store, clusters: ClusterRegistry, project: str, cluster: str | None = None
) -> GpuInventory:
    """The inventory of ``project``'s cluster ``cluster`` (None: its first)."""
    key = clusters.key_for(project, cluster)
    seen = _last.setdefault(store, {})
    last = seen.get(key)
    version, raw = store.inventory_if_changed(key, last.version if last else None)
    if raw is None and last is not None and last.version == version:
        return last.inventory  # unchanged since this process last read it
    if raw is not None:
        return _parsed(seen, key, version, raw)
    k = clusters.for_project(project, cluster).kube
    nodes = k.call_json(k.core.list_node).get("items") or []
    pods = (
        k.call_json(
            k.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        ).get("items")
        or []
    )
    return build_inventory(nodes, [p for p in pods if is_foreign_pod(p)])


@dataclass(frozen=True)
class _Parsed:
    version: str
    raw: bytes
    inventory: GpuInventory


# The last snapshot parsed per store and cluster. A scheduling pass reads the snapshot
# every time, and in a burst passes run back to back while it rarely changes: parsing
# it again was a sixth of the worker's CPU (bench scenario 2), and fetching it whole
# (megabytes at 5,000 nodes) the rest of the read; the version says when neither is
# needed. The objects are frozen.
_last: weakref.WeakKeyDictionary[Store, dict[str, _Parsed]] = weakref.WeakKeyDictionary()


def _parsed(seen: dict[str, _Parsed], key: str, version: str, raw: bytes) -> GpuInventory:
    last = seen.get(key)
    if last is not None and last.raw == raw:
        inventory = last.inventory  # unversioned (version 0), or published again unchanged
    else:
        inventory = GpuInventory.from_json(raw)
    seen[key] = _Parsed(version, raw, inventory)
    return inventory
