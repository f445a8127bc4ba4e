"""The server configuration file (``~/.berth/server/config.yml``): projects and backends.

Mirrors dstack's ``server/config.yml`` for the one backend Berth has, ``kubernetes``.
Unlike dstack, a backend may set ``namespace`` and ``proxy_jump`` together with
``contexts``: they are the defaults for every context that does not set its own.
The kubeconfig ``filename`` is kept as written (``~`` unexpanded); the code that reads
it expands it, so loading this file never depends on the environment.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from shared.configuration.base import (
    BerthModel,
    config_error_from_validation,
    field_error,
    load_yaml_mapping,
    not_supported,
)
from shared.configuration.fields import Port, ResourceName
from shared.configuration.kube_fields import NodePool, PodSettings
from shared.errors import ConfigError

# Kubernetes namespace names are DNS-1123 labels.
DEFAULT_CLUSTER = "default"
"""The name of a backend's cluster when it lists no context (the kubeconfig's current)."""
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# dstack backend types with no Berth counterpart yet. Source: dstack's BackendType
# (src/dstack/_internal/core/models/backends/base.py).
_BACKENDS_NOT_SUPPORTED = frozenset(
    {
        "amddevcloud", "aws", "azure", "cloudrift", "crusoe", "cudo", "datacrunch",
        "digitalocean", "dstack", "gcp", "hotaisle", "jarvislabs", "lambda", "nebius", "oci",
        "remote", "runpod", "slurm", "tensordock", "vastai", "verda", "vultr",
    }
)  # fmt: skip


def load_server_config(path: Path) -> ServerConfig:
    """Read and validate the server configuration at ``path``.

    Raises ConfigError naming the file and the dotted path of the bad field
    (``projects.0.backends.0.kubeconfig``); a missing or unreadable file is one too.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the server configuration {path}: {e.strerror}") from e
    return server_config_from_text(text, source=str(path))


def server_config_from_text(text: str, *, source: str | None = None) -> ServerConfig:
    """Validate server configuration YAML ``text``; ``source`` names it in errors."""
    data = load_yaml_mapping(text, source=source)
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as e:
        raise config_error_from_validation(e, source=source, data=data) from e


class ProxyJump(BerthModel):
    """An SSH jump host in front of the cluster: any node's external address and a port."""

    hostname: str = Field(min_length=1)
    port: Port | None = None
    """``None``: Berth lets Kubernetes pick the NodePort."""


class KubeContext(BerthModel):
    """One kubeconfig context (one cluster) and, optionally, its own jump host."""

    name: str = Field(min_length=1)
    proxy_jump: ProxyJump | None = None
    pod: PodSettings | None = None
    """Pod settings of this cluster, on top of the backend's ``pod``."""


class Kubeconfig(BerthModel):
    """Where the kubeconfig comes from: exactly one of a file or its contents."""

    filename: str | None = Field(None, min_length=1)
    data: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.filename is None) == (self.data is None):
            given = "both" if self.filename is not None else "neither"
            raise ValueError(f"set exactly one of filename or data, got {given}")
        if self.data is not None:
            self.parsed_data()  # a broken inline kubeconfig fails at load, not at first use
        return self

    def path(self) -> Path | None:
        """The kubeconfig file as written (``~`` unexpanded), or None for inline data."""
        return Path(self.filename) if self.filename is not None else None

    def parsed_data(self) -> dict[str, Any] | None:
        """The inline kubeconfig as a mapping, or None when it comes from a file."""
        if self.data is None:
            return None
        try:
            parsed = yaml.safe_load(self.data)
        except yaml.YAMLError as e:
            raise ValueError(f"data is not valid kubeconfig YAML: {e}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"data must be a kubeconfig mapping, got {type(parsed).__name__}")
        return parsed


def _context_from_yaml(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class KubernetesBackend(BerthModel):
    type: Literal["kubernetes"]
    kubeconfig: Kubeconfig
    contexts: list[Annotated[KubeContext, BeforeValidator(_context_from_yaml)]] | None = None
    """Clusters to use; the kubeconfig's current context when absent."""
    namespace: str = "default"
    proxy_jump: ProxyJump | None = None
    """The jump host of every context that does not name its own."""
    gpu_prices: dict[str, Annotated[float, Field(ge=0)]] | None = None
    """GPU model -> dollars per GPU-hour, for cost reporting; Kubernetes has no prices."""
    pod: PodSettings = PodSettings()
    """How run pods are shaped for this cluster: node selector, tolerations, labels,
    annotations, priority class, service account, runtime class, pull secrets and a
    default security context. A context may add its own ``pod`` on top."""
    allow_host_volumes: bool = False
    """Whether runs may mount node directories (``/host/path:/container/path``, a
    hostPath). Off by default: a hostPath reaches the node's own files."""
    ssh_init_image: str | None = Field(None, min_length=1)
    """An image whose ``/berth/ssh/`` directory holds a self-contained OpenSSH sshd
    (static, built with ``--libexecdir=/berth/tools``) and which has ``cp``; an init
    container copies the directory into every run pod, whose own sshd, if any, still
    comes first. ``None`` (the default): a run pod uses the sshd of its own image, and
    SSH is off if it has none. Either way the pod downloads nothing when it starts."""
    node_pools: list[NodePool] = Field(default_factory=list)
    """Node pools an autoscaler can grow: runs that fit no node but fit a pool wait
    for the autoscaler to add one."""
    pod_security: Literal["privileged", "baseline", "restricted"] = "privileged"
    """The Pod Security Standard every pod Berth creates here must pass. ``privileged``
    (the default) leaves pods as they always were. ``restricted`` runs them as non-root,
    with no privilege escalation, every capability dropped and ``RuntimeDefault``
    seccomp, sshd as the container's user; runs that need more are refused at
    submission. Berth also reads the namespace's ``pod-security.kubernetes.io/enforce``
    label and follows it when it is stricter, so set this where the label cannot be
    read or does not tell (OpenShift's ``restricted-v2`` SCC)."""
    pod_security_uid: int | None = Field(1000, ge=1)
    """The UID (with GID 0) restricted pods run as when ``pod.security_context`` names no
    ``runAsUser``: an image's own user is often root, which ``restricted`` refuses.
    ``null`` leaves it to the cluster (OpenShift assigns one from the namespace's range
    and refuses any other)."""

    @field_validator("type", mode="before")
    @classmethod
    def _other_dstack_backends(cls, value: Any) -> Any:
        if isinstance(value, str) and value in _BACKENDS_NOT_SUPPORTED:
            raise not_supported(value=value)
        return value

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if _NAMESPACE_RE.fullmatch(value) is None:
            raise ValueError(
                f"invalid namespace {value!r}: expected at most 63 lowercase letters, digits"
                " or hyphens, starting and ending with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _pod_security_agrees(self) -> Self:
        if self.pod_security == "privileged":
            return self
        if self.allow_host_volumes:
            raise field_error(
                "allow_host_volumes",
                f"hostPath volumes are forbidden by pod_security: {self.pod_security};"
                " turn one of them off",
            )
        context = self.pod.security_context
        if self.pod_security == "restricted" and context is not None and context.runAsUser == 0:
            raise field_error(
                "pod.security_context.runAsUser", "pod_security: restricted forbids UID 0 (root)"
            )
        return self

    @field_validator("contexts")
    @classmethod
    def _unique_contexts(cls, value: list[KubeContext] | None) -> list[KubeContext] | None:
        if value is not None:
            _refuse_duplicates([c.name for c in value], what="context")
        return value

    @field_validator("node_pools")
    @classmethod
    def _unique_pools(cls, value: list[NodePool]) -> list[NodePool]:
        _refuse_duplicates([p.name for p in value], what="node pool")
        return value

    def pod_settings(self) -> PodSettings:
        """The pod settings of the context Berth connects to: the backend's, then its own."""
        name = self.context_name()
        context = next((c for c in self.contexts or [] if c.name == name), None)
        return self.pod.merged(context.pod if context else None)

    def context_name(self) -> str | None:
        """The context Berth connects to: the first listed, else the kubeconfig's current."""
        return self.contexts[0].name if self.contexts else None

    def clusters(self) -> list[KubernetesBackend]:
        """One backend per cluster, in the order listed: each context alone (dstack maps
        each context to a region), or this backend when it lists at most one."""
        if not self.contexts or len(self.contexts) == 1:
            return [self]
        return [self.model_copy(update={"contexts": [c]}) for c in self.contexts]

    def cluster_name(self) -> str:
        """The name runs, offers and events give this cluster: its context's, else
        ``default`` (the kubeconfig's current context)."""
        return self.context_name() or DEFAULT_CLUSTER

    def cluster_key(self) -> str:
        """A short stable id of the cluster behind this backend (projects may share one)."""
        source = self.kubeconfig.filename or self.kubeconfig.data or ""
        digest = hashlib.sha256(f"{source}\0{self.context_name() or ''}".encode())
        return digest.hexdigest()[:12]  # 48 bits: no collisions among a server's clusters

    def jump_host_for(self, context: str) -> ProxyJump | None:
        """The jump host for ``context``: its own, else the backend's, else none."""
        for item in self.contexts or []:
            if item.name == context and item.proxy_jump is not None:
                return item.proxy_jump
        return self.proxy_jump


class ProjectConfig(BerthModel):
    name: ResourceName
    backends: list[KubernetesBackend] = Field(default_factory=list)
    """Its clusters: each backend's contexts (or its current context), in order. Runs
    go to the first with room; a run stays in the cluster it started in."""
    quotas: dict[str, Annotated[int, Field(ge=0, strict=True)]] | None = None
    """GPU model -> most GPUs of that model the project may hold at once."""
    allow_privileged: bool = False
    """Whether runs of this project may ask for ``privileged: true``. A privileged
    container is root on its node, so it is off unless the operator turns it on."""

    @model_validator(mode="after")
    def _clusters_named_once(self) -> Self:
        names = [c.cluster_name() for b in self.backends for c in b.clusters()]
        repeated = sorted(n for n, count in Counter(names).items() if count > 1)
        if repeated:
            raise field_error(
                "backends",
                f"each cluster of a project needs its own name, repeated: {repeated};"
                " list the kubeconfig contexts by name (contexts: [{name: ...}])",
            )
        return self


class ServerConfig(BerthModel):
    """The whole ``config.yml``: the projects the server creates and keeps in sync."""

    dstack_only_fields = frozenset({"default_permissions", "encryption", "plugins"})

    projects: list[ProjectConfig] = Field(default_factory=list)

    def project_names(self) -> list[str]:
        return [p.name for p in self.projects]

    def backend_for(self, project: str, cluster: str | None = None) -> KubernetesBackend:
        """The backend of ``project``'s cluster named ``cluster`` (None: its first);
        ConfigError if the project has none, or none of that name."""
        found = self.clusters_of(project)
        if cluster is None:
            return found[0]
        for backend in found:
            if backend.cluster_name() == cluster:
                return backend
        raise ConfigError(
            f"project {project!r} has no cluster {cluster!r} in the server configuration"
            f" (it has {[b.cluster_name() for b in found]})",
            field="projects",
        )

    def clusters_of(self, project: str) -> list[KubernetesBackend]:
        """Every cluster of ``project``, one backend each, in the order the config lists
        them; ConfigError if it has none."""
        for item in self.projects:
            if item.name == project and item.backends:
                return [c for backend in item.backends for c in backend.clusters()]
        raise ConfigError(
            f"project {project!r} has no kubernetes backend in the server configuration",
            field="projects",
        )

    @model_validator(mode="after")
    def _unique_projects(self) -> Self:
        counts = Counter(p.name for p in self.projects)
        duplicates = sorted(name for name, n in counts.items() if n > 1)
        if duplicates:
            raise field_error("projects", f"project names must be unique, repeated: {duplicates}")
        return self


def _refuse_duplicates(names: list[str], *, what: str) -> None:
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise ValueError(f"each {what} may appear once, repeated: {', '.join(repeated)}")
