"""A volume's PersistentVolumeClaim: the object Berth creates, and what the cluster says of it.

Used by the API (``berth volume apply | list | delete``) and by provisioning,
which makes sure the claim exists before a pod mounts it, so a claim deleted
behind Berth's back, or an apply that stopped between the store and the
cluster, heals at the next run. Creating is idempotent: the claim has a
deterministic name and Berth's labels, and a 409 adopts it when the labels say
it is this volume's; a claim of that name that is not is an error, never
taken over. A registered claim (``claim_name``) is never created or deleted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from shared import kube
from shared.configuration.parse import configuration_from_stored
from shared.configuration.volumes import VolumeConfiguration
from shared.errors import ConfigError, KubeConflict, KubeNotFound
from shared.policy.pod_customisation import split_tags
from shared.state.records import Volume

LABEL_VOLUME = "berth.dev/volume"
_GIB = 2**30


@dataclass(frozen=True)
class ClaimStatus:
    """A claim as ``berth volume list`` shows it."""

    phase: str
    """``Pending``, ``Bound``, ``Lost``, or ``missing`` when there is no such claim."""
    capacity: str | None = None
    access_modes: tuple[str, ...] = ()
    storage_class: str | None = None
    volume_name: str | None = None


def volume_configuration(volume: Volume) -> VolumeConfiguration:
    conf = configuration_from_stored(volume.configuration)
    if not isinstance(conf, VolumeConfiguration):
        raise ConfigError(f"stored volume {volume.name!r} is not a volume configuration")
    return conf


def claim_body(volume: Volume) -> dict[str, Any]:
    """The PersistentVolumeClaim Berth creates for a ``size`` volume."""
    conf = volume_configuration(volume)
    assert conf.size is not None
    tag_labels, _ = split_tags(conf.tags)
    labels = tag_labels | claim_labels(volume)
    spec: dict[str, Any] = {
        "accessModes": list(conf.access_modes),
        "resources": {"requests": {"storage": _quantity(conf.size)}},
    }
    if conf.storage_class_name is not None:
        spec["storageClassName"] = conf.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": volume.claim_name, "labels": labels},
        "spec": spec,
    }


def _quantity(size_gb: float) -> str:
    # dstack's Memory is binary GB, so 100GB is what Kubernetes writes 100Gi.
    return f"{int(size_gb)}Gi" if size_gb == int(size_gb) else str(int(size_gb * _GIB))


def claim_labels(volume: Volume) -> dict[str, str]:
    return {
        kube.LABEL_MANAGED: kube.MANAGED_BY,
        kube.LABEL_PROJECT: volume.project,
        LABEL_VOLUME: volume.name,
    }


def ensure_claim(k: kube.Kube, namespace: str, volume: Volume) -> None:
    """Create the volume's claim if Berth owns it and it is missing; adopt Berth's own."""
    if not volume.created_by_berth:
        return
    body = claim_body(volume)
    try:
        k.call(k.core.create_namespaced_persistent_volume_claim, namespace, body)
        return
    except KubeConflict:
        pass
    existing = k.call(k.core.read_namespaced_persistent_volume_claim, volume.claim_name, namespace)
    labels = existing.metadata.labels or {}
    if any(labels.get(key) != value for key, value in claim_labels(volume).items()):
        raise ConfigError(
            f"a PersistentVolumeClaim named {volume.claim_name} exists in {namespace} but is not"
            f" Berth's claim for volume {volume.name!r}; delete or rename it",
            field="name",
        )


def claim_status(k: kube.Kube, namespace: str, claim: str) -> ClaimStatus:
    try:
        pvc = k.call(k.core.read_namespaced_persistent_volume_claim, claim, namespace)
    except KubeNotFound:
        return ClaimStatus(phase="missing")
    status = pvc.status
    capacity = (status.capacity or {}).get("storage") if status is not None else None
    modes = (status.access_modes if status is not None else None) or pvc.spec.access_modes or []
    return ClaimStatus(
        phase=(status.phase if status is not None else None) or "Pending",
        capacity=capacity,
        access_modes=tuple(modes),
        storage_class=pvc.spec.storage_class_name,
        volume_name=pvc.spec.volume_name,
    )


def delete_claim(k: kube.Kube, namespace: str, volume: Volume) -> None:
    """Delete the claim Berth created (a registered claim stays); gone already is fine."""
    if not volume.created_by_berth:
        return
    with contextlib.suppress(KubeNotFound):
        k.call(k.core.delete_namespaced_persistent_volume_claim, volume.claim_name, namespace)
