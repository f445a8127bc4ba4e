"""Making the cluster match a jump host's objects: create what is missing, fix drift.

A port the apiserver refuses (outside the NodePort range, or held by another
Service) becomes a :class:`JumpHostError` whose message says what to change;
the caller records it as the jump host's health and retries later.

Keys change without a restart: the Secret is patched and the running jump pod
annotated. A pod update makes the kubelet sync the pod and refresh its Secret
volume at once, instead of at its next periodic sync up to a minute later
(kubernetes/website#18082, elastic/cloud-on-k8s#496); sshd reads
``authorized_keys`` at every login, so open sessions stay.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from shared import kube
from shared.errors import BerthError, KubeError, KubeNotFound
from shared.ssh import HOST_KEY_FILE
from workers.jumphost_objects import (
    ANNOTATION_CONFIG,
    ANNOTATION_KEYS,
    LABEL_JUMP,
    JumpHostTarget,
    JumpObjects,
    sha,
)

log = logging.getLogger(__name__)


class JumpHostError(BerthError):
    """The cluster refused a jump host object; the message says what to change."""


def reconcile(k: kube.Kube, namespace: str, objects: JumpObjects) -> tuple[int | None, list[str]]:
    """Create what is missing and correct what drifted; return the NodePort and the repairs.

    Secret first (the pod mounts it), then the Service (a refused port stops
    here, before a pod is started for nothing), then the Deployment.
    """
    repaired: list[str] = []
    _ensure_secret(k, namespace, objects.secret, repaired)
    port = _ensure_service(k, namespace, objects.service, repaired)
    _ensure_deployment(k, namespace, objects.deployment, repaired)
    return port, repaired


def secret_host_key(k: kube.Kube, target: JumpHostTarget) -> str | None:
    try:
        secret = k.call(k.core.read_namespaced_secret, target.name, target.namespace)
    except KubeNotFound:
        return None
    raw = (secret.data or {}).get(HOST_KEY_FILE)
    return base64.b64decode(raw).decode() if raw else None


def _ensure_secret(k: kube.Kube, ns: str, body: dict[str, Any], repaired: list[str]) -> None:
    name = body["metadata"]["name"]
    existing = _read(k, k.core.read_namespaced_secret, name, ns)
    if existing is None:
        _create(k, k.core.create_namespaced_secret, ns, body, "Secret")
        repaired.append(f"created Secret {name}")
        return
    _refuse_foreign(existing, "Secret", name)
    current = existing.data or {}
    changed = {key: v for key, v in body["data"].items() if current.get(key) != v}
    if not changed:
        return
    k.call(k.core.patch_namespaced_secret, name, ns, {"data": changed})
    if "authorized_keys" in changed:
        _nudge_pods(k, ns, name, sha(body["data"]["authorized_keys"]))
        log.info("jump host %s/%s: authorized_keys updated", ns, name)  # routine, not a repair
        del changed["authorized_keys"]
    if changed:
        repaired.append(f"updated {', '.join(sorted(changed))} in Secret {name}")


def _nudge_pods(k: kube.Kube, ns: str, name: str, keys_sha: str) -> None:
    """Annotate the running jump pods so their kubelet refreshes the Secret volume now."""
    pods = k.call(k.core.list_namespaced_pod, ns, label_selector=f"{LABEL_JUMP}={name}").items
    patch = {"metadata": {"annotations": {ANNOTATION_KEYS: keys_sha}}}
    for pod in pods:
        try:
            k.call(k.core.patch_namespaced_pod, pod.metadata.name, ns, patch)
        except KubeNotFound:
            continue  # replaced meanwhile; the new pod mounts the new Secret anyway


def _ensure_service(k: kube.Kube, ns: str, body: dict[str, Any], repaired: list[str]) -> int | None:
    name = body["metadata"]["name"]
    wanted = body["spec"]["ports"][0].get("nodePort")
    existing = _read(k, k.core.read_namespaced_service, name, ns)
    if existing is None:
        existing = _create(k, k.core.create_namespaced_service, ns, body, "Service")
        repaired.append(f"created Service {name}")
    else:
        _refuse_foreign(existing, "Service", name)
    ports = existing.spec.ports or []
    current = ports[0].node_port if ports else None
    if wanted is not None and current != wanted:
        _call_with_port_errors(
            k, k.core.patch_namespaced_service, name, ns, {"spec": {"ports": body["spec"]["ports"]}}
        )
        repaired.append(f"moved Service {name} back to NodePort {wanted}")
        return int(wanted)
    return int(current) if current is not None else None


def _ensure_deployment(k: kube.Kube, ns: str, body: dict[str, Any], repaired: list[str]) -> None:
    name = body["metadata"]["name"]
    existing = _read(k, k.apps.read_namespaced_deployment, name, ns)
    if existing is None:
        _create(k, k.apps.create_namespaced_deployment, ns, body, "Deployment")
        repaired.append(f"created Deployment {name}")
        return
    _refuse_foreign(existing, "Deployment", name)
    template = body["spec"]["template"]
    annotations = existing.spec.template.metadata.annotations or {}
    drifted = (
        annotations.get(ANNOTATION_CONFIG) != template["metadata"]["annotations"][ANNOTATION_CONFIG]
    )
    if drifted or existing.spec.replicas != 1:
        k.call(k.apps.patch_namespaced_deployment, name, ns, {"spec": body["spec"]})
        repaired.append(f"updated Deployment {name} (sshd config or host key changed)")


def _read(k: kube.Kube, fn: Callable[..., Any], name: str, ns: str) -> Any:
    try:
        return k.call(fn, name, ns)
    except KubeNotFound:
        return None


def _create(k: kube.Kube, fn: Callable[..., Any], ns: str, body: dict[str, Any], kind: str) -> Any:
    return _call_with_port_errors(k, fn, ns, body, kind=kind)


def _call_with_port_errors(
    k: kube.Kube, fn: Callable[..., Any], *args: Any, kind: str = "Service"
) -> Any:
    try:
        return k.call(fn, *args)
    except KubeError as e:
        if e.status == 422 and "nodePort" in e.message:
            raise JumpHostError(_port_advice(e.message)) from e
        if e.status is not None and e.status < 500 and e.status != 429:
            raise JumpHostError(f"Kubernetes refused the jump host's {kind}: {e.message}") from e
        raise


def _port_advice(message: str) -> str:
    detail = message.split("nodePort: ", 1)[-1]
    if "already allocated" in message:
        hint = "another Service holds that NodePort; pick a free proxy_jump.port"
    elif "range" in message:
        hint = "set proxy_jump.port inside the cluster's NodePort range"
    else:
        hint = "check proxy_jump.port"
    return f"the cluster refused the jump host's NodePort ({detail}): {hint}"


def _refuse_foreign(obj: Any, kind: str, name: str) -> None:
    labels = obj.metadata.labels or {}
    if labels.get(kube.LABEL_MANAGED) != kube.MANAGED_BY or labels.get(LABEL_JUMP) != name:
        raise JumpHostError(
            f"a {kind} named {name} exists but Berth did not create it; rename or delete it"
        )
