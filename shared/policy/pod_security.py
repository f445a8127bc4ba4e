"""Pod Security Standards: which level a namespace enforces, and pods that pass it.

Kubernetes' Pod Security admission refuses a pod that breaks the level named by
its namespace's ``pod-security.kubernetes.io/enforce`` label (``privileged``,
``baseline``, ``restricted``); OpenShift's ``restricted-v2`` SCC asks for the
same as ``restricted`` and assigns an arbitrary UID (with GID 0) itself.

The level Berth builds for is the **stricter** of the backend's ``pod_security``
and the namespace's label: a label stricter than the setting would refuse
today's pods anyway, so following it can only help, and a setting stricter than
the label is the operator's word (OpenShift enforces through SCCs, not always
through the label). When Berth may not read the namespace (403), or the read
times out, the setting alone decides; the plan says which source decided.

Under ``restricted`` a pod runs as non-root with no privilege escalation, every
capability dropped and the ``RuntimeDefault`` seccomp profile; see
:func:`restrict_pod_spec`. Runs that cannot work that way are refused at
submission by :func:`refusals`, with the field that asks for it.

Source: https://kubernetes.io/docs/concepts/security/pod-security-standards/
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shared import kube
from shared.errors import ForbiddenError, KubeError, KubeForbidden, KubeNotFound

log = logging.getLogger(__name__)

Level = Literal["privileged", "baseline", "restricted"]
LEVELS: tuple[Level, ...] = ("privileged", "baseline", "restricted")  # loosest first
# The Pod Security admission label. Source: k8s.io/pod-security-admission/api
# (``EnforceLevelLabel``).
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# Ports below this need CAP_NET_BIND_SERVICE, which a non-root process does not
# get even when the capability is added (containerd sets no ambient capabilities).
FIRST_UNPRIVILEGED_PORT = 1024
# The account sshd logs users in as in restricted pods: a non-root sshd can only
# log in the user it runs as, and it looks that user up by name in /etc/passwd.
RESTRICTED_SSH_USER = "berth"


@dataclass(frozen=True)
class LevelDecision:
    """The level Berth builds pods for, and what decided it (shown in the plan)."""

    level: Level
    source: str
    """``server config``, ``namespace label`` or ``server config (namespace not readable: ...)``."""


def stricter(a: Level, b: Level) -> Level:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


def level_for(
    k: kube.Kube,
    namespace: str,
    *,
    configured: Level,
    read_label: Callable[[], Level | None] | None = None,
) -> LevelDecision:
    """The stricter of ``configured`` and the namespace's enforce label (read with
    the client's timeout, or by ``read_label``); the configured level alone if the
    label cannot be read."""
    try:
        label = read_label() if read_label is not None else namespace_level(k, namespace)
    except KubeError as e:
        why = "no permission to read it" if isinstance(e, KubeForbidden) else e.message
        return LevelDecision(configured, f"server config (namespace label not readable: {why})")
    if label is None or LEVELS.index(label) <= LEVELS.index(configured):
        return LevelDecision(configured, "server config")
    return LevelDecision(label, f"namespace label {ENFORCE_LABEL}={label}")


def namespace_level(k: kube.Kube, namespace: str) -> Level | None:
    """The level the namespace enforces; None when it has no (known) label or is absent."""
    try:
        ns = k.call(k.core.read_namespace, namespace)
    except KubeNotFound:
        return None
    value = ((ns.metadata and ns.metadata.labels) or {}).get(ENFORCE_LABEL)
    if value is None:
        return None
    if value not in LEVELS:
        # The admission plugin itself refuses such a label; never guess looser.
        log.warning(
            "namespace %s: unknown %s=%r; using restricted", namespace, ENFORCE_LABEL, value
        )
        return "restricted"
    level: Level = value
    return level


def refusals(conf: Any, level: Level) -> list[ForbiddenError]:
    """Why ``conf`` cannot run at ``level``, one error per field (empty: it can)."""
    if level == "privileged":
        return []
    out = []
    field = privileged_field(conf)
    if field is not None:
        out.append(
            ForbiddenError(
                f"{field}: true{_needs_privileged(field)} is forbidden by Pod Security level"
                f" {level!r} of this namespace (a privileged container is root on its node)",
                field=field,
            )
        )
    # Optional node directories are left out where hostPath is off (dstack's meaning).
    mounts = getattr(conf, "volumes", None) or []
    hosts = [m.instance_path for m in mounts if m.is_instance and not m.optional]
    if hosts:
        out.append(
            ForbiddenError(
                f"node directories ({', '.join(hosts)}) are hostPath volumes, forbidden by Pod"
                f" Security level {level!r}; use a project volume (a claim) instead",
                field="volumes",
            )
        )
    if level == "restricted":
        low = sorted(p for p in _container_ports(conf) if p < FIRST_UNPRIVILEGED_PORT)
        if low:
            field = "port" if _service_port(conf) in low else "ports"
            out.append(
                ForbiddenError(
                    f"port {low[0]} is below {FIRST_UNPRIVILEGED_PORT}: under Pod Security level"
                    " 'restricted' the container runs as non-root with every capability dropped"
                    " and cannot bind it; listen on 1024 or above",
                    field=field,
                )
            )
    return out


def privileged_field(conf: Any) -> str | None:
    """The field that makes a container of ``conf`` privileged (``docker``, which needs it
    for Docker-in-Docker, or ``privileged``), a replica group's included; None: no such field."""
    places = [("", conf)]
    places += [(f"groups.{i}.", g) for i, g in enumerate(getattr(conf, "groups", None) or [])]
    for prefix, place in places:
        for field in ("docker", "privileged"):
            if getattr(place, field, None):
                return prefix + field
    return None


def _needs_privileged(field: str) -> str:
    docker = field.rsplit(".", 1)[-1] == "docker"
    return " (Docker-in-Docker runs a privileged container)" if docker else ""


def check(conf: Any, decision: LevelDecision) -> None:
    """Raise the first refusal of ``conf`` at the decided level, naming what decided it."""
    found = refusals(conf, decision.level)
    if found:
        first = found[0]
        raise ForbiddenError(
            f"{first.message} (level from the {decision.source})", field=first.field
        )


def restrict_pod_spec(spec: dict[str, Any], *, uid: int | None) -> dict[str, Any]:
    """A copy of a pod spec that passes ``restricted``, fields the operator set kept.

    ``uid``: the UID to run as when the spec names none (with GID 0, as OpenShift
    does, so files Berth's images make group-writable for root's group are
    writable); None leaves it to the cluster, as OpenShift's SCC assigns one.
    """
    out = copy.deepcopy(spec)
    pod = dict(out.get("securityContext") or {})
    pod["runAsNonRoot"] = True
    if (pod.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        pod["seccompProfile"] = {"type": "RuntimeDefault"}
    if uid is not None and "runAsUser" not in pod:
        pod["runAsUser"] = uid
        pod.setdefault("runAsGroup", 0)
    out["securityContext"] = pod
    for container in _containers(out):
        ctx = dict(container.get("securityContext") or {})
        ctx.pop("privileged", None)
        ctx["allowPrivilegeEscalation"] = False
        ctx["capabilities"] = {"drop": ["ALL"]}
        container["securityContext"] = ctx
    return out


def _containers(spec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def _container_ports(conf: Any) -> list[int]:
    ports = [int(getattr(p, "container_port", p)) for p in getattr(conf, "ports", None) or []]
    service = _service_port(conf)
    return ports + ([service] if service is not None else [])


def _service_port(conf: Any) -> int | None:
    if getattr(conf, "type", None) != "service":
        return None
    return int(getattr(conf.port, "container_port", conf.port))
