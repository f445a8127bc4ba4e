"""Volumes: apply, list, delete, and the checks a run's mounts pass at submission.

``apply`` records the volume and, for a ``size`` volume, creates its claim at
once, so ``berth volume list`` shows whether the cluster bound it before any
run needs it (provisioning creates it again if it ever goes missing). A
registered claim (``claim_name``) must already exist. ``delete`` refuses while
an active run mounts the volume and names the runs; it deletes the claim only
if Berth created it.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from shared.clusters import ClusterRegistry
from shared.configuration.parse import parse_volume_configuration
from shared.configuration.volumes import READ_WRITE_ONCE, READ_WRITE_ONCE_POD, volume_summary
from shared.errors import ConfigError, ConflictError, NotFoundError
from shared.placement import placements
from shared.state.records import Volume
from shared.state.store import Store
from shared.volumes.volume_claims import (
    claim_status,
    delete_claim,
    ensure_claim,
    volume_configuration,
)
from shared.volumes.volume_placement import berth_claim_name, host_volume_refusal, mounted_volumes


class VolumePublic(BaseModel):
    name: str
    project: str
    user: str
    claim: str
    created_by_berth: bool
    """Berth created the claim and deletes it with the volume."""
    spec: str
    """``100GB ReadWriteOnce (fast-ssd)`` or ``claim data-pvc``."""
    status: str
    """The claim's phase: ``Bound``, ``Pending``, ``Lost``, or ``missing``."""
    capacity: str | None
    access_modes: list[str]
    read_only: bool
    used_by: list[str]
    """Active runs that mount the volume."""
    created_at: float


def apply_volume(
    store: Store,
    clusters: ClusterRegistry,
    *,
    project: str,
    user: str,
    configuration: str | dict[str, Any],
) -> VolumePublic:
    """Record the volume and make sure its claim exists; applying the same file is a no-op."""
    source = configuration if isinstance(configuration, str) else yaml.safe_dump(configuration)
    conf = parse_volume_configuration(source)
    cluster = clusters.for_project(project)
    data = conf.model_dump(mode="json")
    existing = store.get_volume(project, conf.name)
    if existing is not None:
        if existing.configuration != data:
            raise ConflictError(
                f"volume {conf.name!r} exists with another configuration; a claim cannot be"
                f" reshaped in place: delete it first (berth volume delete {conf.name})",
                field="name",
            )
        volume = existing
    else:
        volume = Volume(
            name=conf.name,
            project=project,
            user=user,
            configuration=data,
            claim_name=conf.claim_name or berth_claim_name(project, conf.name),
            created_by_berth=conf.creates_claim,
        )
        if not volume.created_by_berth:
            status = claim_status(cluster.kube, cluster.namespace, volume.claim_name)
            if status.phase == "missing":
                raise ConfigError(
                    f"no PersistentVolumeClaim named {volume.claim_name} in namespace"
                    f" {cluster.namespace}; create it first, or give size instead to let"
                    " Berth create one",
                    field="claim_name",
                )
        if not store.create_volume(volume):
            raise ConflictError(f"volume {conf.name!r} was just created by someone else")
    ensure_claim(cluster.kube, cluster.namespace, volume)
    return describe_volume(store, clusters, volume)


def list_volumes(store: Store, clusters: ClusterRegistry, project: str) -> list[VolumePublic]:
    return [describe_volume(store, clusters, v) for v in store.list_volumes(project)]


def delete_volume(store: Store, clusters: ClusterRegistry, project: str, name: str) -> None:
    volume = store.get_volume(project, name)
    if volume is None:
        raise NotFoundError(f"no volume named {name!r} in project {project!r}", field="name")
    users = runs_using(store, project, name)
    if users:
        raise ConflictError(
            f"volume {name!r} is used by active runs: {', '.join(users)};"
            " stop them first (berth stop RUN)",
            field="name",
        )
    cluster = clusters.for_project(project)
    delete_claim(cluster.kube, cluster.namespace, volume)
    store.delete_volume(project, name)


def runs_using(store: Store, project: str, name: str) -> list[str]:
    """Names of the active runs of ``project`` that mount volume ``name``."""
    return sorted(
        run.name
        for run, _ in placements.active_runs(store)
        if run.project == project and name in mounted_volumes(run.configuration)
    )


def check_run_volumes(store: Store, clusters: ClusterRegistry, project: str, conf: Any) -> None:
    """Refuse, at submission, mounts that could never work; ConfigError naming the field.

    Node directories need the backend's ``allow_host_volumes``; named volumes must
    exist; and a claim Berth made single-node (ReadWriteOnce) cannot serve a
    multi-node task, whose nodes are distinct by definition.
    """
    mounts = getattr(conf, "volumes", None) or []
    if not mounts:
        return
    backend = clusters.server.backend_for(project)
    refusal = host_volume_refusal(mounts, allow_host_volumes=backend.allow_host_volumes)
    if refusal is not None:
        raise ConfigError(refusal, field="volumes")
    nodes = int(getattr(conf, "nodes", 1) or 1) if getattr(conf, "type", "") == "task" else 1
    for index, mount in enumerate(mounts):
        if mount.is_instance:
            continue
        # ${{ dstack.node_rank }}: each node mounts its own volume, which must exist.
        for rank in range(nodes if mount.per_node else 1):
            name = mount.name_for(rank)
            assert name is not None  # not an instance path: a named volume
            _check_volume(store, project, name, index, shared_by=1 if mount.per_node else nodes)


def _check_volume(store: Store, project: str, name: str, index: int, *, shared_by: int) -> None:
    volume = store.get_volume(project, name)
    if volume is None:
        raise ConfigError(
            f"no volume named {name!r} in project {project!r}; create it with"
            " berth volume apply -f FILE (type: volume)",
            field=f"volumes.{index}.name",
        )
    modes = set(volume_configuration(volume).access_modes)
    single = modes <= {READ_WRITE_ONCE, READ_WRITE_ONCE_POD}
    if shared_by > 1 and volume.created_by_berth and single:
        raise ConfigError(
            f"volume {name!r} is {', '.join(sorted(modes))}: one node at a time can"
            f" mount it, and this task runs on {shared_by}; use a ReadWriteMany or"
            " ReadOnlyMany volume, or one volume per node (${{ dstack.node_rank }})",
            field=f"volumes.{index}.name",
        )


def describe_volume(store: Store, clusters: ClusterRegistry, volume: Volume) -> VolumePublic:
    conf = volume_configuration(volume)
    cluster = clusters.for_project(volume.project)
    status = claim_status(cluster.kube, cluster.namespace, volume.claim_name)
    return VolumePublic(
        name=volume.name,
        project=volume.project,
        user=volume.user,
        claim=volume.claim_name,
        created_by_berth=volume.created_by_berth,
        spec=volume_summary(conf),
        status=status.phase,
        capacity=status.capacity,
        access_modes=list(status.access_modes or conf.access_modes),
        read_only=conf.read_only,
        used_by=runs_using(store, volume.project, volume.name),
        created_at=volume.created_at,
    )
