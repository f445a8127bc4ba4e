"""A kubeconfig that holds only Berth's RBAC from ``deploy/k8s``, for tests.

:func:`berth_kubeconfig` binds the Role and ClusterRole that ship in
``deploy/k8s/rbac.yaml`` to a fresh ServiceAccount and writes a kubeconfig
with a token for it, so a test (or the whole stack) runs with exactly the
rights an installed Berth has, and a missing grant fails as it would for a user.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from cli.local.cluster import ClusterState
from shared import kube
from shared.errors import KubeConflict
from tests.polling import wait_until

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
SERVICE_ACCOUNT = "berth"
TOKEN_LIFETIME_S = 24 * 3600  # outlives any test session; the apiserver sets no maximum here


# Templates the user fills in and applies by hand; kustomization.yaml leaves them out.
TEMPLATES = ("secret.yaml",)


def load_manifests() -> list[dict[str, Any]]:
    """Every object in ``deploy/k8s``: kustomization order, then the templates."""
    listing = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in [*listing["resources"], *TEMPLATES]:
        docs += [d for d in yaml.safe_load_all((K8S_DIR / name).read_text()) if d]
    return docs


def manifest(kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name`` in ``deploy/k8s``."""
    found = [d for d in load_manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"deploy/k8s has {len(found)} {kind} objects named {name!r}")
    return copy.deepcopy(found[0])


def berth_kubeconfig(
    kube_admin: kube.Kube,
    local_cluster: ClusterState,
    *,
    namespace: str,
    directory: Path,
    without: frozenset[str] = frozenset(),
) -> Path:
    """Bind Berth's Role (in ``namespace``) and ClusterRole to a new ServiceAccount there.

    Returns the path of a kubeconfig that authenticates as that ServiceAccount
    with a TokenRequest token, once the apiserver's authorizer grants its rights.
    The ClusterRoleBinding is owned by the namespace, so deleting the namespace
    removes it too. ``without``: namespaced resources whose rules are left out of the
    Role, for tests of an installation whose operator granted less.
    """
    k = kube_admin
    _create_or_replace(
        k,
        k.core.create_namespaced_service_account,
        None,
        {"metadata": {"name": SERVICE_ACCOUNT}},
        namespace=namespace,
    )
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
    role = manifest("Role", "berth")
    role["metadata"]["namespace"] = namespace
    role["rules"] = [r for r in role["rules"] if not without.intersection(r["resources"])]
    _create_or_replace(
        k,
        k.rbac.create_namespaced_role,
        k.rbac.replace_namespaced_role,
        role,
        namespace=namespace,
    )
    _create_or_replace(
        k,
        k.rbac.create_namespaced_role_binding,
        k.rbac.replace_namespaced_role_binding,
        {
            "metadata": {"name": "berth", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "berth"},
            "subjects": [subject],
        },
        namespace=namespace,
    )
    cluster_role = manifest("ClusterRole", "berth")
    _create_or_replace(k, k.rbac.create_cluster_role, k.rbac.replace_cluster_role, cluster_role)
    ns = k.call(k.core.read_namespace, namespace)
    _create_or_replace(
        k,
        k.rbac.create_cluster_role_binding,
        k.rbac.replace_cluster_role_binding,
        {
            "metadata": {
                "name": f"berth-{namespace}",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "name": namespace,
                        "uid": ns.metadata.uid,
                    }
                ],
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role["metadata"]["name"],
            },
            "subjects": [subject],
        },
    )
    token = k.call(
        k.core.create_namespaced_service_account_token,
        SERVICE_ACCOUNT,
        namespace,
        {"spec": {"expirationSeconds": TOKEN_LIFETIME_S}},
    ).status.token
    path = directory / f"kubeconfig-berth-{namespace}"
    path.write_text(yaml.safe_dump(_kubeconfig(local_cluster, token), sort_keys=False))
    path.chmod(0o600)
    # The authorizer sees new bindings through an informer: wait until both apply.
    user = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    wait_until(
        lambda: (
            _allowed(k, user, verb="delete", resource="pods", namespace=namespace)
            and _allowed(k, user, verb="watch", resource="nodes", namespace=None)
        ),
        timeout=30,
        what=f"RBAC for {user}",
    )
    return path


def _kubeconfig(local_cluster: ClusterState, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "berth-local",
                "cluster": {
                    "server": local_cluster.apiserver_url,
                    "certificate-authority": local_cluster.ca_file,
                },
            }
        ],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {"name": "berth", "context": {"cluster": "berth-local", "user": SERVICE_ACCOUNT}}
        ],
        "current-context": "berth",
    }


def _create_or_replace(
    k: kube.Kube,
    create: Any,
    replace: Any,
    body: dict[str, Any],
    *,
    namespace: str | None = None,
) -> None:
    """Create ``body``; if it exists, replace it (or keep it when ``replace`` is None)."""
    args = (namespace,) if namespace is not None else ()
    try:
        k.call(create, *args, body)
    except KubeConflict:
        if replace is not None:
            k.call(replace, body["metadata"]["name"], *args, body)


def _allowed(k: kube.Kube, user: str, *, verb: str, resource: str, namespace: str | None) -> bool:
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": ""}
    if namespace is not None:
        attributes["namespace"] = namespace
    review = k.call(
        client.AuthorizationV1Api(k.api).create_subject_access_review,
        {"spec": {"user": user, "resourceAttributes": attributes}},
    )
    return bool(review.status.allowed)
