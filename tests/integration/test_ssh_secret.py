"""``workers.ssh_secret.ensure`` against a real apiserver: one create per key set while
the worker knows it, adopted on 409, made again once the worker has forgotten it."""

from __future__ import annotations

import base64

import pytest

from shared import kube, ssh
from shared.clusters import Cluster
from shared.configuration.server import KubernetesBackend
from shared.errors import KubeNotFound
from workers import ssh_secret

pytestmark = pytest.mark.integration

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKeyBerthTestKeyBerthTestKey0 me@laptop",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cluster(k: kube.Kube, namespace: str) -> Cluster:
    backend = KubernetesBackend.model_validate(
        {"type": "kubernetes", "kubeconfig": {"filename": f"/tmp/{namespace}"}}
    )
    return Cluster(kube=k, namespace=namespace, backend=backend)


def _host_key(k: kube.Kube, namespace: str, name: str) -> str:
    secret = k.call(k.core.read_namespaced_secret, name, namespace)
    return base64.b64decode(secret.data[ssh.HOST_KEY_FILE]).decode()


def test_ensure_makes_the_secret_once_and_again_after_forgetting_it(
    kube_admin: kube.Kube, namespace: str
) -> None:
    ssh_secret.forget()
    cluster, clock = _cluster(kube_admin, namespace), Clock()
    name = ssh_secret.ensure(cluster, "main", KEYS, clock=clock)
    first = _host_key(kube_admin, namespace, name)
    assert ssh.pod_host_key(kube_admin, namespace, name) == ssh.public_key_text(first)

    ssh_secret.forget()  # another worker, which never met it: its create gets 409
    assert ssh_secret.ensure(cluster, "main", KEYS, clock=clock) == name
    assert _host_key(kube_admin, namespace, name) == first  # adopted, not replaced

    kube_admin.call(kube_admin.core.delete_namespaced_secret, name, namespace)
    clock.now += ssh_secret.KNOWN_FOR_S / 2
    ssh_secret.ensure(cluster, "main", KEYS, clock=clock)
    with pytest.raises(KubeNotFound):  # known a moment ago: not asked again
        kube_admin.call(kube_admin.core.read_namespaced_secret, name, namespace)

    clock.now += ssh_secret.KNOWN_FOR_S
    ssh_secret.ensure(cluster, "main", KEYS, clock=clock)
    again = _host_key(kube_admin, namespace, name)
    assert again != first  # made anew, its two halves together
    assert ssh.pod_host_key(kube_admin, namespace, name) == ssh.public_key_text(again)
    ssh_secret.forget()
