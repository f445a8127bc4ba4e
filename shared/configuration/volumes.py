"""Volume configurations (``type: volume``): a PersistentVolumeClaim a run can mount.

The shape is dstack's Kubernetes volume (``KubernetesVolumeConfiguration`` in
src/dstack/_internal/core/models/volumes.py): either ``claim_name`` registers a
claim that already exists, or ``size`` (with ``storage_class_name`` and
``access_modes``) asks Berth to create one. Where dstack silently ignores the
creation fields next to ``claim_name``, Berth refuses them: they would not do
what they say.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from shared.configuration.base import BerthModel, field_error, not_supported
from shared.configuration.fields import ResourceName, Tags
from shared.configuration.kube_fields import DnsSubdomain
from shared.configuration.ranges import Memory

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
READ_WRITE_ONCE: AccessMode = "ReadWriteOnce"
READ_WRITE_ONCE_POD: AccessMode = "ReadWriteOncePod"

# dstack volume keys Berth refuses: a cluster has no zones to pick, and Berth keeps
# volumes until deleted.
VOLUME_FIELDS_NOT_SUPPORTED = frozenset({"auto_cleanup_duration", "availability_zone", "volume_id"})


def _read_write_once() -> list[AccessMode]:
    return [READ_WRITE_ONCE]


class VolumeConfiguration(BerthModel):
    """A named volume of a project, backed by one PersistentVolumeClaim."""

    dstack_only_fields = VOLUME_FIELDS_NOT_SUPPORTED

    type: Literal["volume"] = "volume"
    name: ResourceName
    """Runs mount the volume by this name (``volumes: [NAME:/path]``)."""
    backend: Literal["kubernetes"]
    region: str = ""
    """dstack's cluster name; Berth uses the project's one cluster, so only ``""``."""
    claim_name: DnsSubdomain | None = None
    """An existing claim in the project's namespace, registered as it is."""
    size: Memory | None = None
    """The size of the claim Berth creates (``100GB``)."""
    storage_class_name: DnsSubdomain | None = None
    """``None``: the cluster's default StorageClass."""
    access_modes: list[AccessMode] = Field(default_factory=_read_write_once, min_length=1)
    read_only: bool = False
    """Every mount of this volume is read-only, whatever the run asks."""
    tags: Tags = Field(default_factory=dict)
    """Labels of the claim Berth creates (where they are valid label values)."""

    @field_validator("region")
    @classmethod
    def _one_cluster(cls, value: str) -> str:
        if value:
            raise not_supported(value=value)
        return value

    @field_validator("size")
    @classmethod
    def _positive(cls, value: Memory | None) -> Memory | None:
        if value is not None and value <= 0:
            raise ValueError(f"expected a size above zero such as 100GB, got {value}")
        return value

    @model_validator(mode="after")
    def _claim_or_size(self) -> Self:
        if self.claim_name is not None:
            if self.size is not None:
                raise field_error("size", "set size to create a claim or claim_name to use one")
            # By value, not by "was it written": stored configurations carry every field.
            if self.storage_class_name is not None:
                raise field_error("storage_class_name", "the existing claim's own setting applies")
            if self.access_modes != _read_write_once():
                raise field_error("access_modes", "the existing claim's own setting applies")
        elif self.size is None:
            raise field_error("size", "set size (Berth creates the claim) or claim_name")
        return self

    @property
    def creates_claim(self) -> bool:
        return self.claim_name is None


def volume_summary(conf: Any) -> str:
    """One line for listings: ``claim data-pvc`` or ``100GB ReadWriteOnce (fast-ssd)``."""
    if conf.claim_name is not None:
        return f"claim {conf.claim_name}"
    klass = conf.storage_class_name or "default class"
    return f"{conf.size} {','.join(conf.access_modes)} ({klass})"
