"""A token bound only to deploy/k8s's RBAC: Berth's calls succeed, anything else is 403.

Mutating calls outside Berth's needs are sent with ``dryRun=All``: the
apiserver authorizes a dry run exactly like a real request, so a Role that
granted too much would show up here without deleting a node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.local.cluster import ClusterState
from shared import kube
from shared.errors import KubeForbidden
from tests.polling import wait_until
from tests.rbac import berth_kubeconfig, manifest

pytestmark = pytest.mark.integration

DRY = {"dry_run": "All"}


@pytest.fixture
def berth(
    kube_admin: kube.Kube, local_cluster: ClusterState, namespace: str, tmp_path: Path
) -> Iterator[kube.Kube]:
    path = berth_kubeconfig(kube_admin, local_cluster, namespace=namespace, directory=tmp_path)
    k = kube.connect(kubeconfig=path, timeout=10.0)
    yield k
    k.close()


def test_the_berth_token_can_create_read_list_and_delete_a_jobs_objects(
    berth: kube.Kube, namespace: str
) -> None:
    k = berth
    labels = {kube.LABEL_MANAGED: kube.MANAGED_BY, kube.LABEL_JOB: "j1"}
    meta = {"name": "berth-main-run-j1", "labels": labels}
    k.call(k.core.create_namespaced_secret, namespace, {"metadata": meta, "stringData": {"a": "b"}})
    k.call(
        k.core.create_namespaced_service,
        namespace,
        {"metadata": meta, "spec": {"clusterIP": "None", "selector": labels}},
    )
    k.call(
        k.core.create_namespaced_pod,
        namespace,
        {"metadata": meta, "spec": {"containers": [{"name": "main", "image": "busybox"}]}},
    )
    for read in (k.core.read_namespaced_secret, k.core.read_namespaced_service):
        k.call(read, meta["name"], namespace)
    wait_until(
        lambda: (
            k.call(k.core.read_namespaced_pod, meta["name"], namespace).status.phase == "Running"
        ),
        timeout=30,
        what="the pod running on a KWOK node",
    )
    assert k.call(k.core.read_namespaced_pod_log, meta["name"], namespace) == ""
    # The jump host's key refresh: patch its Secret and annotate its pod; move its NodePort.
    annotate = {"metadata": {"annotations": {"berth.dev/test": "1"}}}
    for patch in (
        k.core.patch_namespaced_secret,
        k.core.patch_namespaced_pod,
        k.core.patch_namespaced_service,
    ):
        k.call(patch, meta["name"], namespace, annotate)
    selector = f"{kube.LABEL_JOB}=j1"
    for lister, deleter in (
        (k.core.list_namespaced_pod, k.core.delete_namespaced_pod),
        (k.core.list_namespaced_secret, k.core.delete_namespaced_secret),
        (k.core.list_namespaced_service, k.core.delete_namespaced_service),
    ):
        [item] = k.call(lister, namespace, label_selector=selector).items
        k.call(deleter, item.metadata.name, namespace)


def test_the_berth_token_can_create_read_and_patch_the_jump_hosts_deployment(
    berth: kube.Kube, namespace: str
) -> None:
    k = berth
    labels = {kube.LABEL_MANAGED: kube.MANAGED_BY, "berth.dev/jump-host": "berth-jump-32022"}
    body: dict[str, Any] = {
        "metadata": {"name": "berth-jump-32022", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "sshd", "image": "berth-jump"}]},
            },
        },
    }
    name = body["metadata"]["name"]
    k.call(k.apps.create_namespaced_deployment, namespace, body)
    assert k.call(k.apps.read_namespaced_deployment, name, namespace).spec.replicas == 1
    k.call(k.apps.patch_namespaced_deployment, name, namespace, {"spec": {"replicas": 1}})


def test_the_berth_token_can_read_and_watch_the_whole_clusters_nodes_and_pods(
    berth: kube.Kube,
) -> None:
    k = berth
    assert k.call(k.core.list_node).items
    k.call(k.core.list_pod_for_all_namespaces, limit=1)
    for watch_list in (k.core.list_node, k.core.list_pod_for_all_namespaces):
        stream = k.call(watch_list, watch=True, timeout_seconds=1, _preload_content=False)
        kube.let_go(stream, read_whole=False)


def _outside_berths_needs(namespace: str) -> dict[str, Callable[[kube.Kube], Any]]:
    deployment = {
        "metadata": {"name": "intruder"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    return {
        "create a deployment in another namespace": lambda k: k.call(
            k.apps.create_namespaced_deployment, "default", deployment, **DRY
        ),
        "delete a deployment": lambda k: k.call(
            k.apps.delete_namespaced_deployment, "berth-jump-32022", namespace, **DRY
        ),
        "create a stateful set": lambda k: k.call(
            k.apps.create_namespaced_stateful_set, namespace, deployment, **DRY
        ),
        "create a pod in another namespace": lambda k: k.call(
            k.core.create_namespaced_pod,
            "default",
            {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            **DRY,
        ),
        "delete a node": lambda k: k.call(
            k.core.delete_node, k.call(k.core.list_node).items[0].metadata.name, **DRY
        ),
        "read secrets in kube-system": lambda k: k.call(
            k.core.list_namespaced_secret, "kube-system"
        ),
        "read secrets in another namespace": lambda k: k.call(
            k.core.list_namespaced_secret, "default"
        ),
        "replace a pod": lambda k: k.call(
            k.core.replace_namespaced_pod,
            "any",
            namespace,
            {"metadata": {"name": "any"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            **DRY,
        ),
        "delete every pod at once": lambda k: k.call(
            k.core.delete_collection_namespaced_pod, namespace, **DRY
        ),
        "create a namespace": lambda k: k.call(
            k.core.create_namespace, {"metadata": {"name": "intruder"}}, **DRY
        ),
        "grant itself a role": lambda k: k.call(
            k.rbac.create_namespaced_role,
            namespace,
            {"metadata": {"name": "more"}, "rules": []},
            **DRY,
        ),
        "read config maps": lambda k: k.call(k.core.list_namespaced_config_map, namespace),
    }


OPERATIONS = sorted(_outside_berths_needs("x"))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_operation_outside_berths_needs_is_refused_with_403(
    berth: kube.Kube, namespace: str, operation: str
) -> None:
    with pytest.raises(KubeForbidden) as refused:
        _outside_berths_needs(namespace)[operation](berth)
    assert refused.value.status == 403


def test_the_in_cluster_kubeconfig_authenticates_with_the_mounted_token_file(
    kube_admin: kube.Kube, local_cluster: ClusterState, namespace: str, tmp_path: Path
) -> None:
    # The ConfigMap's kubeconfig points at the files Kubernetes mounts into every
    # pod; here they are a token file and the local CA, at other paths.
    path = berth_kubeconfig(kube_admin, local_cluster, namespace=namespace, directory=tmp_path)
    token = yaml.safe_load(path.read_text())["users"][0]["user"]["token"]
    token_file = tmp_path / "token"
    token_file.write_text(token)
    in_cluster = yaml.safe_load(manifest("ConfigMap", "berth-config")["data"]["kubeconfig"])
    cluster = in_cluster["clusters"][0]["cluster"]
    assert cluster["server"] == "https://kubernetes.default.svc"
    cluster["server"] = local_cluster.apiserver_url
    cluster["certificate-authority"] = local_cluster.ca_file
    user = in_cluster["users"][0]["user"]
    assert set(user) == {"tokenFile"}
    user["tokenFile"] = str(token_file)
    k = kube.connect(kubeconfig_data=in_cluster, timeout=10.0)
    try:
        assert k.call(k.core.list_node).items
    finally:
        k.close()
