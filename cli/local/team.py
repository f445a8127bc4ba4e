"""A namespace as a team gets it on a shared cluster, on the local cluster.

``berth local up`` makes ``berth-team``: a ServiceAccount bound only to the
namespace Role of ``deploy/namespace-only/rbac.yaml`` (no ClusterRole, so no
node reads), a ResourceQuota of two GPUs, and a kubeconfig whose token is in a
file next to it (refreshed on every ``up``; Berth re-reads a ``tokenFile``).
Project ``team`` uses it, so ``berth status`` shows a backend in namespace-only
mode and newcomers can try it; the tests build the same thing in namespaces
of their own. A handful of API calls: it keeps ``up`` fast.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import yaml

from shared import kube
from shared.errors import KubeConflict, KubeNotFound

TEAM_NAMESPACE = "berth-team"
TEAM_PROJECT = "team"
QUOTA_NAME = "team-gpus"
TEAM_GPUS = 2  # a small share, so the quota (not the nodes) is what runs wait for
SERVICE_ACCOUNT = "berth"
TOKEN_LIFETIME_S = 7 * 24 * 3600  # a local cluster left up for a week still works
ROLE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "namespace-only" / "rbac.yaml"


def ensure_team(
    k: kube.Kube,
    *,
    admin_kubeconfig: Path,
    directory: Path,
    namespace: str = TEAM_NAMESPACE,
    gpus: int | None = TEAM_GPUS,
) -> Path:
    """Create (or keep) the namespace, its Role, binding and quota; the kubeconfig's path.

    ``gpus`` None: no ResourceQuota. Idempotent: existing objects are replaced.
    """
    with contextlib.suppress(KubeConflict):
        k.call(k.core.create_namespace, {"metadata": {"name": namespace}})
    for doc in _manifests(namespace):
        _apply(k, doc, namespace)
    if gpus is not None:
        set_gpu_quota(k, namespace, gpus)
    token = k.call(
        k.core.create_namespaced_service_account_token,
        SERVICE_ACCOUNT,
        namespace,
        {"spec": {"expirationSeconds": TOKEN_LIFETIME_S}},
    ).status.token
    token_file = directory / f"{namespace}.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    path = directory / f"{namespace}.kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig(admin_kubeconfig, token_file), sort_keys=False))
    path.chmod(0o600)
    return path


def set_gpu_quota(k: kube.Kube, namespace: str, gpus: int) -> None:
    """``team-gpus``: at most ``gpus`` ``nvidia.com/gpu`` requested in the namespace."""
    body = {
        "metadata": {"name": QUOTA_NAME},
        "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus)}},
    }
    try:
        k.call(k.core.replace_namespaced_resource_quota, QUOTA_NAME, namespace, body)
    except KubeNotFound:
        k.call(k.core.create_namespaced_resource_quota, namespace, body)


def _manifests(namespace: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(ROLE_FILE.read_text()) if d]
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
        out.append(doc)
    return out


def _apply(k: kube.Kube, doc: dict[str, Any], namespace: str) -> None:
    create, replace = {
        "ServiceAccount": (k.core.create_namespaced_service_account, None),
        "Role": (k.rbac.create_namespaced_role, k.rbac.replace_namespaced_role),
        "RoleBinding": (
            k.rbac.create_namespaced_role_binding,
            k.rbac.replace_namespaced_role_binding,
        ),
    }[doc["kind"]]
    try:
        k.call(create, namespace, doc)
    except KubeConflict:
        if replace is not None:
            k.call(replace, doc["metadata"]["name"], namespace, doc)


def _kubeconfig(admin_kubeconfig: Path, token_file: Path) -> dict[str, Any]:
    """The admin's kubeconfig (server, CA) with the ServiceAccount's token file as its user."""
    doc: dict[str, Any] = yaml.safe_load(admin_kubeconfig.read_text())
    context = doc["contexts"][0]["context"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [c for c in doc["clusters"] if c["name"] == context["cluster"]],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"tokenFile": str(token_file)}}],
        "contexts": [
            {"name": "team", "context": {"cluster": context["cluster"], "user": SERVICE_ACCOUNT}}
        ],
        "current-context": "team",
    }
