"""Kubernetes-shaped pieces of the server configuration: pod settings and node pools.

What an operator writes here ends up in pod specs, so each value is checked
against the rule the apiserver would apply (DNS-1123 names, qualified label
keys, label values, toleration operators and effects) when the file is loaded,
and a mistake names its dotted path instead of failing at the first pod.
Embedded Kubernetes objects (``tolerations``, ``security_context``) keep
Kubernetes' own camelCase keys, so they can be pasted from its documentation.

Source of the rules: k8s.io/apimachinery/pkg/util/validation (``IsQualifiedName``,
``IsValidLabelValue``, ``IsDNS1123Subdomain``) and the core/v1 validation of
tolerations (k8s.io/kubernetes/pkg/apis/core/validation).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from shared.configuration.base import BerthModel, field_error
from shared.configuration.fields import Duration
from shared.configuration.ranges import Memory

_NAME_PART = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_PART_RE = re.compile(_NAME_PART)
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_MAX = 63  # a label value and the name part of a qualified name
_SUBDOMAIN_MAX = 253  # a DNS-1123 subdomain, and a qualified name's prefix

# Label keys Berth sets itself (shared.kube): teardown and selectors rely on them, so
# no configuration may set or shadow them.
RESERVED_LABEL_PREFIX = "berth.dev/"
RESERVED_LABEL_KEYS = frozenset({"app.kubernetes.io/managed-by"})


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= _SUBDOMAIN_MAX and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None


def is_qualified_name(value: str) -> bool:
    """A label or annotation key: ``[prefix/]name``, the prefix a DNS subdomain."""
    prefix, slash, name = value.rpartition("/")
    if slash and not (prefix and is_dns_subdomain(prefix)):
        return False
    return len(name) <= _NAME_MAX and _NAME_PART_RE.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= _NAME_MAX and _NAME_PART_RE.fullmatch(value) is not None)


def is_reserved_label(key: str) -> bool:
    return key.startswith(RESERVED_LABEL_PREFIX) or key in RESERVED_LABEL_KEYS


def _dns_subdomain(value: str) -> str:
    if not is_dns_subdomain(value):
        raise ValueError(
            f"invalid name {value!r}: expected a DNS-1123 subdomain (lowercase letters, digits,"
            " '-' and '.', starting and ending with a letter or digit, at most 253 characters)"
        )
    return value


def _dns_label(value: str) -> str:
    if len(value) > _NAME_MAX or _DNS_LABEL_RE.fullmatch(value) is None:
        raise ValueError(
            f"invalid name {value!r}: expected at most 63 lowercase letters, digits or '-',"
            " starting and ending with a letter or digit"
        )
    return value


def _qualified_name(value: str) -> str:
    if not is_qualified_name(value):
        raise ValueError(
            f"invalid key {value!r}: expected [prefix/]name, the name at most 63 letters,"
            " digits, '-', '_' or '.' starting and ending with a letter or digit, the prefix"
            " a DNS subdomain (e.g. example.com/team)"
        )
    return value


def _label_value(value: str) -> str:
    if not is_label_value(value):
        raise ValueError(
            f"invalid label value {value!r}: expected at most 63 letters, digits, '-', '_'"
            " or '.', starting and ending with a letter or digit (or empty)"
        )
    return value


DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
QualifiedName = Annotated[str, AfterValidator(_qualified_name)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


def _no_reserved_keys(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in value if is_reserved_label(k))
    if reserved:
        raise ValueError(
            f"{', '.join(reserved)}: reserved for Berth's own labels ({RESERVED_LABEL_PREFIX}*,"
            " app.kubernetes.io/managed-by), which selectors and teardown rely on"
        )
    return value


Labels = Annotated[dict[QualifiedName, LabelValue], AfterValidator(_no_reserved_keys)]
Annotations = Annotated[dict[QualifiedName, str], AfterValidator(_no_reserved_keys)]


class Toleration(BerthModel):
    """A core/v1 Toleration, with the apiserver's own cross-field rules.

    Field names are Kubernetes' camelCase, here and in the security context below.
    """

    key: QualifiedName | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Self:
        if self.key is None and self.operator != "Exists":
            raise field_error("operator", "a toleration without a key must use operator Exists")
        if self.operator == "Exists" and self.value:
            raise field_error("value", "must be empty when operator is Exists")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise field_error("tolerationSeconds", "only allowed with effect NoExecute")
        return self

    def to_kubernetes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=False)


class SeccompProfile(BerthModel):
    type: Literal["RuntimeDefault", "Localhost", "Unconfined"]
    localhostProfile: str | None = None

    @model_validator(mode="after")
    def _localhost_needs_a_profile(self) -> Self:
        if (self.type == "Localhost") != (self.localhostProfile is not None):
            raise field_error(
                "localhostProfile", "set it exactly when type is Localhost (and only then)"
            )
        return self


class PodSecurityContext(BerthModel):
    """The pod-level securityContext fields a default may set (core/v1 PodSecurityContext)."""

    runAsUser: int | None = Field(None, ge=0)
    runAsGroup: int | None = Field(None, ge=0)
    runAsNonRoot: bool | None = None
    fsGroup: int | None = Field(None, ge=0)
    fsGroupChangePolicy: Literal["OnRootMismatch", "Always"] | None = None
    supplementalGroups: list[Annotated[int, Field(ge=0)]] | None = None
    seccompProfile: SeccompProfile | None = None

    def to_kubernetes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class PodSettings(BerthModel):
    """How every pod of a backend (or of one context) is shaped for the cluster's rules.

    Berth's own labels, its placement affinity and its GPU tolerations are applied
    after these and cannot be overridden; see :mod:`shared.policy.pod_customisation`.
    """

    node_selector: Labels = Field(default_factory=dict)
    """Labels every node running Berth's pods must carry (combined with Berth's placement)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Added to the GPU tolerations Berth sets itself."""
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    priority_class_name: DnsSubdomain | None = None
    service_account_name: DnsSubdomain | None = None
    automount_service_account_token: bool = False
    """Off by default: run code gets no cluster credentials unless the operator says so."""
    runtime_class_name: DnsSubdomain | None = None
    image_pull_secrets: list[DnsSubdomain] = Field(default_factory=list)
    """Names of existing Secrets in the namespace, added to the run's own pull secret."""
    security_context: PodSecurityContext | None = None
    """The pod securityContext of every run pod."""

    def merged(self, override: PodSettings | None) -> PodSettings:
        """This backend-wide default with a context's settings on top.

        Maps merge key by key (the context wins), lists are concatenated, and any
        scalar the context sets replaces the backend's.
        """
        if override is None:
            return self
        data = self.model_dump()
        for key in override.model_fields_set:
            mine, theirs = data[key], getattr(override, key)
            if isinstance(mine, dict):
                data[key] = mine | theirs
            elif isinstance(mine, list):
                data[key] = mine + [
                    t.model_dump() if isinstance(t, BerthModel) else t for t in theirs
                ]
            else:
                data[key] = theirs.model_dump() if isinstance(theirs, BerthModel) else theirs
        return PodSettings.model_validate(data)


class NodePool(BerthModel):
    """Nodes an autoscaler (cluster-autoscaler, Karpenter) can add, and what they look like.

    Berth creates no node: it places a run that fits no existing node but fits a
    pool on that pool, with a pod whose affinity asks for the pool's ``labels``,
    and the autoscaler adds a node for the pending pod.
    """

    name: DnsLabel
    gpu: str | None = Field(None, min_length=1)
    """The GPU model (``H100``, ``L40S``, ``MI300X``) or the product string GPU Feature
    Discovery reports for it; ``None`` for a CPU-only pool."""
    gpu_vendor: Literal["nvidia", "amd"] = "nvidia"
    gpu_memory: Memory | None = None
    """Memory per GPU; Berth's GPU catalogue knows it for named models."""
    gpus_per_node: int = Field(0, ge=0, strict=True)
    max_nodes: int = Field(ge=1, strict=True)
    """The pool's maximum size, counting the nodes it already has."""
    labels: Labels = Field(min_length=1)
    """Labels every node of the pool carries (its node group, e.g.
    ``cloud.google.com/gke-nodepool: l40s``); the pod's affinity asks for all of them."""
    cpu: float | None = Field(None, gt=0)
    """Allocatable cores of one node; ``None``: Berth does not check CPU requests."""
    memory: Memory | None = None
    """Allocatable memory of one node; ``None``: Berth does not check memory requests."""
    scale_up_timeout: Duration = 900
    """Seconds a run waits for the autoscaler before it goes back to the queue (or fails,
    as its retry policy says). 15 minutes is cluster-autoscaler's own default
    ``--max-node-provision-time``."""

    @model_validator(mode="after")
    def _gpu_and_count_agree(self) -> Self:
        if self.gpu is not None and self.gpus_per_node == 0:
            raise field_error("gpus_per_node", f"a pool of {self.gpu} GPUs needs gpus_per_node")
        if self.gpu is None and self.gpus_per_node:
            raise field_error("gpu", "name the GPU model of the pool's nodes")
        return self
