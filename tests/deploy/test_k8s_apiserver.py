"""The real apiserver's verdict on deploy/k8s: every object is valid, every pod admissible.

Server-side apply with ``dryRun=All`` and ``fieldValidation=Strict`` runs the
whole admission chain (schema, defaulting, validation, admission plugins) and
stores nothing. Only the two namespaces and the ServiceAccount are created for
real, because namespaced objects and pods need them to exist.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from shared import kube
from shared.errors import KubeForbidden, KubeNotFound
from tests.polling import wait_until
from tests.rbac import load_manifests, manifest

pytestmark = pytest.mark.integration

FIELD_MANAGER = "berth-deploy-test"
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def dynamic(kube_admin: kube.Kube, tmp_path_factory: pytest.TempPathFactory) -> DynamicClient:
    cache = tmp_path_factory.mktemp("discovery") / "cache.json"  # not a shared /tmp file
    return DynamicClient(kube_admin.api, cache_file=str(cache))


@pytest.fixture(scope="module")
def berth_namespaces(kube_admin: kube.Kube, dynamic: DynamicClient) -> Iterator[list[str]]:
    """The manifests' namespaces and ServiceAccount, created for real, deleted afterwards."""
    names = [d["metadata"]["name"] for d in load_manifests() if d["kind"] == "Namespace"]
    for name in names:
        _apply(dynamic, manifest("Namespace", name), dry_run=False)
    _apply(dynamic, manifest("ServiceAccount", "berth"), dry_run=False)
    # Pods that name no ServiceAccount get "default", which the controller creates shortly.
    wait_until(
        lambda: all(_exists(kube_admin, "default", n) for n in names),
        timeout=30,
        what="default ServiceAccounts",
    )
    yield names
    for name in names:
        kube_admin.call(kube_admin.core.delete_namespace, name)


def test_every_manifest_passes_a_server_side_dry_run_apply(
    dynamic: DynamicClient, berth_namespaces: list[str]
) -> None:
    refused = []
    for doc in load_manifests():
        try:
            _apply(dynamic, doc, dry_run=True)
        except ApiException as e:
            refused.append(f"{doc['kind']} {doc['metadata']['name']}: {e.status} {e.body}")
    assert not refused, "\n".join(refused)


def test_a_manifest_with_an_unknown_field_is_refused(
    dynamic: DynamicClient, berth_namespaces: list[str]
) -> None:
    # The check above means something only if the apiserver validates strictly.
    api = manifest("Deployment", "berth-api")
    api["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ApiException) as refused:
        _apply(dynamic, api, dry_run=True)
    # Server-side apply answers 500 when it cannot build the typed patch; the message says why.
    assert "imagePullPolicyy: field not declared in schema" in str(refused.value.body)


def test_every_berth_pod_is_admitted_under_the_restricted_pod_security_standard(
    kube_admin: kube.Kube, berth_namespaces: list[str]
) -> None:
    for workload in load_manifests():
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = _pod_of(workload)
        kube_admin.call(
            kube_admin.core.create_namespaced_pod, "berth", pod, dry_run="All"
        )  # raises KubeForbidden if Pod Security admission refuses it


def test_a_pod_that_may_run_as_root_is_refused_in_berths_namespace(
    kube_admin: kube.Kube, berth_namespaces: list[str]
) -> None:
    # Shows the namespace really enforces "restricted", so the test above proves something.
    pod = _pod_of(manifest("Deployment", "berth-api"))
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    with pytest.raises(KubeForbidden, match="restricted"):
        kube_admin.call(kube_admin.core.create_namespaced_pod, "berth", pod, dry_run="All")


def _apply(dynamic: DynamicClient, doc: dict[str, Any], *, dry_run: bool) -> None:
    resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    dynamic.server_side_apply(
        resource,
        body=doc,
        field_manager=FIELD_MANAGER,
        dry_run="All" if dry_run else None,
        query_params=[("fieldValidation", "Strict")],
        _request_timeout=TIMEOUT_S,
    )


def _pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod a Deployment or StatefulSet would create, as its controller would."""
    template = copy.deepcopy(workload["spec"]["template"])
    name = workload["metadata"]["name"]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": f"{name}-dry-run"},
        "spec": template["spec"],
    }
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volume = claim["metadata"]["name"]
        # The StatefulSet controller adds each claim as a volume named after its template.
        pod["spec"].setdefault("volumes", []).append(
            {"name": volume, "persistentVolumeClaim": {"claimName": f"{volume}-{name}-0"}}
        )
    return pod


def _exists(k: kube.Kube, service_account: str, namespace: str) -> bool:
    try:
        k.call(k.core.read_namespaced_service_account, service_account, namespace)
    except KubeNotFound:
        return False
    return True
