"""``Kube.post``: creates from a dict body without the client's models, answering and
failing as the generated ``create_namespaced_*`` do, on a real apiserver."""

from __future__ import annotations

from functools import partial

import pytest

from shared import kube
from shared.errors import KubeConflict, KubeError
from shared.kube.raw import uid_of

pytestmark = pytest.mark.integration


def _pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": "post"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "berth.local/run:x", "resources": {"limits": {"cpu": 1}}}
            ],
            "nodeName": "kwok-cpu-0",
            "automountServiceAccountToken": False,
        },
    }


def test_a_posted_pod_is_created_as_sent_and_a_second_post_is_a_conflict(
    kube_admin: kube.Kube, namespace: str
) -> None:
    k = kube_admin
    uid = uid_of(k.call_bytes(partial(k.post, "pods"), namespace, _pod("posted")))
    pod = k.call(k.core.read_namespaced_pod, "posted", namespace)
    assert uid is not None and pod.metadata.uid == uid
    assert pod.metadata.labels == {"test": "post"}
    assert pod.spec.containers[0].resources.limits == {"cpu": "1"}
    assert pod.spec.automount_service_account_token is False
    with pytest.raises(KubeConflict):
        k.call_bytes(partial(k.post, "pods"), namespace, _pod("posted"))


def test_a_refused_post_raises_with_the_apiservers_reason(
    kube_admin: kube.Kube, namespace: str
) -> None:
    k = kube_admin
    bad = _pod("Not_A_Name")
    with pytest.raises(KubeError) as refused:
        k.call_bytes(partial(k.post, "pods"), namespace, bad)
    assert refused.value.status == 422 and "Not_A_Name" in refused.value.message
    secret = {"metadata": {"name": "posted-secret"}, "stringData": {"k": "v"}}
    k.call_bytes(partial(k.post, "secrets"), namespace, secret)
    assert k.call(k.core.read_namespaced_secret, "posted-secret", namespace).data == {"k": "dg=="}
