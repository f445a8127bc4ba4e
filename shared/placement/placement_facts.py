"""What the cluster says about where a run may go, beyond its resources.

Read for the scheduling pass and for the plan ``berth apply`` shows, which feed
the answers to the pure functions of :mod:`shared.volumes.volume_placement` and
:mod:`shared.placement.autoscaling`:

- :func:`claim_states`: for each volume a run mounts, its claim's access modes,
  the nodes its PersistentVolume's node affinity allows, and the nodes where
  pods using it run (plus where Berth placed jobs using it, from the store);
- :func:`selector_nodes`: the nodes carrying the backend's ``pod.node_selector``;
- :func:`pool_node_counts`: how many nodes each autoscaling pool has now, and
  :func:`with_pools`, the inventory with the pools' room added as pool nodes.

Every call is a read with the client's timeout. The inventory has no node
labels, so these list nodes with a label selector instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from shared.clusters import Cluster
from shared.configuration.kube_fields import NodePool
from shared.errors import KubeNotFound
from shared.gpu.inventory import GpuInventory
from shared.placement import autoscaling
from shared.state.store import Store
from shared.volumes.volume_claims import volume_configuration
from shared.volumes.volume_placement import ClaimState, nodes_matching

_LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


def claim_states(
    store: Store,
    cluster: Cluster,
    project: str,
    volumes: Sequence[str],
    *,
    berth_nodes: Mapping[tuple[str, str], frozenset[str]],
) -> list[ClaimState]:
    """The state of each named volume's claim; volumes that do not exist are left out."""
    k = cluster.kube
    states: list[ClaimState] = []
    pods_by_claim: dict[str, list[str | None]] | None = None
    for name in volumes:
        volume = store.get_volume(project, name)
        if volume is None:
            continue
        try:
            pvc = k.call(
                k.core.read_namespaced_persistent_volume_claim, volume.claim_name, cluster.namespace
            )
        except KubeNotFound:
            modes = frozenset(volume_configuration(volume).access_modes)
            used = berth_nodes.get((project, name), frozenset())
            states.append(ClaimState(name, volume.claim_name, modes, used_on=used))
            continue
        bound_modes = pvc.status.access_modes if pvc.status is not None else None
        modes = frozenset(bound_modes or pvc.spec.access_modes or [])
        pinned = _pv_nodes(cluster, pvc.spec.volume_name) if pvc.spec.volume_name else None
        if pods_by_claim is None:
            pods_by_claim = _pods_by_claim(cluster)
        users = pods_by_claim.get(volume.claim_name, [])
        used = frozenset(n for n in users if n) | berth_nodes.get((project, name), frozenset())
        states.append(
            ClaimState(name, volume.claim_name, modes, pinned, used_on=used, pods=len(users))
        )
    return states


def selector_nodes(cluster: Cluster, selector: Mapping[str, str]) -> frozenset[str]:
    """Names of the nodes that carry every label of ``selector``."""
    k = cluster.kube
    text = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    return frozenset(n.metadata.name for n in k.call(k.core.list_node, label_selector=text).items)


def with_pools(
    inventory: GpuInventory, cluster: Cluster, *, held: Iterable[str] = ()
) -> GpuInventory:
    """``inventory`` plus the pool nodes of the backend's autoscaling pools (if any)."""
    backend = cluster.backend
    if not backend.node_pools:
        return inventory
    return autoscaling.with_pool_capacity(
        inventory,
        backend.node_pools,
        existing=pool_node_counts(cluster, backend.node_pools),
        held=held,
        node_selector=backend.pod_settings().node_selector,
    )


def pool_node_counts(cluster: Cluster, pools: Sequence[NodePool]) -> dict[str, int]:
    """Per pool, the nodes that exist now with all of the pool's labels."""
    k = cluster.kube
    return {
        pool.name: len(
            k.call(k.core.list_node, label_selector=autoscaling.pool_selector(pool)).items
        )
        for pool in pools
    }


def _pv_nodes(cluster: Cluster, pv_name: str) -> frozenset[str] | None:
    k = cluster.kube
    try:
        pv = k.call(k.core.read_persistent_volume, pv_name)
    except KubeNotFound:
        return None
    affinity = pv.spec.node_affinity
    required = affinity.required if affinity is not None else None
    if required is None:
        return None
    terms = k.api.sanitize_for_serialization(required).get("nodeSelectorTerms") or []
    nodes = {n.metadata.name: n.metadata.labels or {} for n in k.call(k.core.list_node).items}
    return nodes_matching(nodes, terms)


def _pods_by_claim(cluster: Cluster) -> dict[str, list[str | None]]:
    """Claim name -> the nodes of the live pods mounting it (None while unbound)."""
    k = cluster.kube
    pods = k.call(k.core.list_namespaced_pod, cluster.namespace, field_selector=_LIVE_PODS).items
    users: dict[str, list[str | None]] = {}
    for pod in pods:
        for volume in pod.spec.volumes or []:
            claim = volume.persistent_volume_claim
            if claim is not None:
                users.setdefault(claim.claim_name, []).append(pod.spec.node_name)
    return users
