"""The live inventory watcher against the real local control plane.

The session cluster is shared with every other test, so assertions are about
one node that these tests pin their pods to (``spec.nodeName`` bypasses the
scheduler), and the published figures are compared with what a fresh LIST of
that node and its pods says at the same moment, which stays correct while
other tests' pods come and go elsewhere or on it.
"""

from __future__ import annotations

import io
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import watch

from cli.local.cluster import ClusterState
from shared import kube
from shared.gpu.inventory import GpuInventory, build_inventory
from shared.state.inventory_store import is_foreign_pod
from tests.polling import wait_until
from workers.inventory_watch import ADDED, DELETED, InventoryWatcher, WatchedPod, WatchSettings

pytestmark = pytest.mark.integration

NODE = "kwok-a100-1"
GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
WAIT_S = 30  # generous for a loaded CI host; a healthy run takes well under a second


def test_the_first_published_inventory_lists_the_default_fake_gpu_nodes(
    start_watcher: StartWatcher,
) -> None:
    published = Published()
    start_watcher(publish=published)

    first = published.first()
    assert first is not None
    nodes = {n.name: n for n in first.nodes}
    for pool, count, gpus, model in (
        ("h100", 4, 8, "H100"),
        ("a100", 2, 8, "A100"),
        ("a10", 2, 1, "A10"),
    ):
        for i in range(count):
            node = nodes[f"kwok-{pool}-{i}"]
            assert node.allocatable.gpus == {GPU: gpus}
            assert [(g.name, g.count) for g in node.gpus] == [(model, gpus)]
    for i in range(2):
        assert nodes[f"kwok-cpu-{i}"].gpus == ()
        assert nodes[f"kwok-cpu-{i}"].allocatable.gpus == {}


def test_a_foreign_gpu_pod_is_taken_from_its_node_and_given_back_when_deleted(
    start_watcher: StartWatcher, kube_admin: kube.Kube, namespace: str
) -> None:
    published = Published()
    start_watcher(publish=published)
    key = f"{namespace}/two-gpus"

    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _pod("two-gpus", gpus=2))
    wait_until(
        lambda: _published_agrees(published, kube_admin, counting=key),
        timeout=WAIT_S,
        what=f"published free GPUs of {NODE} counting {key}",
    )

    kube_admin.call(
        kube_admin.core.delete_namespaced_pod, "two-gpus", namespace, grace_period_seconds=0
    )
    wait_until(
        lambda: _published_agrees(published, kube_admin, without=key),
        timeout=WAIT_S,
        what=f"published free GPUs of {NODE} without {key}",
    )


def test_a_berth_pod_is_reported_with_its_job_id_and_takes_no_free_capacity(
    start_watcher: StartWatcher, kube_admin: kube.Kube, namespace: str
) -> None:
    published, berth_pods = Published(), BerthPodEvents()
    start_watcher(publish=published, on_berth_pod=berth_pods)
    job = f"job-{secrets.token_hex(4)}"
    labels = kube.berth_labels("proj", "run", job)

    kube_admin.call(
        kube_admin.core.create_namespaced_pod, namespace, _pod("berth", gpus=2, labels=labels)
    )
    wait_until(lambda: berth_pods.seen(job, ADDED), timeout=WAIT_S, what="on_berth_pod ADDED")
    # Pod events are applied in order, so a snapshot that counts this later
    # foreign pod was made after the Berth pod's event had been handled.
    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _pod("marker", gpus=1))
    wait_until(
        lambda: _published_agrees(published, kube_admin, counting=f"{namespace}/marker"),
        timeout=WAIT_S,
        what="published free GPUs counting the marker pod only",
    )
    assert f"{namespace}/berth" in _pods_on_node(kube_admin)

    kube_admin.call(
        kube_admin.core.delete_namespaced_pod, "berth", namespace, grace_period_seconds=0
    )
    wait_until(lambda: berth_pods.seen(job, DELETED), timeout=WAIT_S, what="on_berth_pod DELETED")


def test_a_namespace_watch_reports_berth_pods_as_their_json_from_its_watch_events(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str
) -> None:
    """Namespace-only mode's pod watch (no node reads): events reach ``on_berth_pod`` as
    in cluster mode, each pod readable as the API's JSON (its list function declares no
    return type, so the client builds no model objects)."""
    berth_pods = BerthPodEvents()
    own = kube.connect(kubeconfig=Path(local_cluster.kubeconfig), timeout=10.0)
    watcher = InventoryWatcher(
        own, publish=Published(), on_berth_pod=berth_pods, namespace=namespace
    )
    watcher.start()
    try:

        def listed() -> bool:
            return bool(watcher.health().lists.get("pods"))

        wait_until(listed, timeout=WAIT_S, what="the namespace's pods listed")
        job = f"job-{secrets.token_hex(4)}"
        labels = kube.berth_labels("proj", "run", job)
        kube_admin.call(
            kube_admin.core.create_namespaced_pod, namespace, _pod("berth", gpus=1, labels=labels)
        )
        wait_until(lambda: berth_pods.seen(job, ADDED), timeout=WAIT_S, what="ADDED")
        kube_admin.call(
            kube_admin.core.delete_namespaced_pod, "berth", namespace, grace_period_seconds=0
        )
        wait_until(lambda: berth_pods.seen(job, DELETED), timeout=WAIT_S, what="DELETED")
        for event_type in (ADDED, DELETED):
            [watched] = berth_pods.pods(job, event_type)
            assert isinstance(watched, WatchedPod), (event_type, watched)
            pod = watched.raw()
            assert pod["metadata"]["name"] == "berth"
            assert pod["metadata"]["labels"][kube.LABEL_JOB] == job
        assert watcher.health().restarts == 0, watcher.health()
    finally:
        assert watcher.stop(timeout=10), "a watcher thread did not stop"
        own.close()


def test_a_pod_watch_expired_with_410_is_relisted_and_the_inventory_stays_correct(
    start_watcher: StartWatcher, kube_admin: kube.Kube, namespace: str
) -> None:
    published, expiring = Published(), ExpiringPodWatches()
    watcher = start_watcher(publish=published, watch_factory=expiring)
    relists_before = watcher.health().relists

    wait_until(expiring.expire_the_pod_watch, timeout=WAIT_S, what="the pod watch to expire")
    wait_until(
        lambda: watcher.health().relists > relists_before, timeout=WAIT_S, what="a pod relist"
    )

    kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _pod("after-410", gpus=3))
    wait_until(
        lambda: _published_agrees(published, kube_admin, counting=f"{namespace}/after-410"),
        timeout=WAIT_S,
        what="published free GPUs after the relist",
    )
    wait_until(
        lambda: published.latest() == _inventory_from_a_fresh_list(kube_admin),
        timeout=WAIT_S,
        what="the whole published inventory to equal one built from a fresh LIST",
    )


def test_the_watcher_outlives_an_apiserver_outage_and_publishes_what_changed_during_it(
    start_watcher: StartWatcher,
    kube_admin: kube.Kube,
    namespace: str,
    local_cluster: ClusterState,
) -> None:
    published = Published()
    with (
        ApiserverLink(local_cluster.ports["apiserver"]) as link,
        closing(_client_through(link, local_cluster)) as client,
    ):
        watcher = start_watcher(client=client, publish=published)

        link.cut()
        wait_until(lambda: watcher.health().last_error, timeout=WAIT_S, what="the watch to break")
        kube_admin.call(kube_admin.core.create_namespaced_pod, namespace, _pod("in-outage", gpus=1))
        link.restore()

        wait_until(
            lambda: _published_agrees(published, kube_admin, counting=f"{namespace}/in-outage"),
            timeout=WAIT_S,
            what="published free GPUs counting the pod created during the outage",
        )
        health = watcher.health()
        assert watcher.stop(), "a watcher thread did not stop"  # before the link goes away
    assert health.alive
    assert health.restarts == 0  # handled as an API error, not a crash of a loop


def test_a_forbidden_list_is_reported_once_and_not_asked_again_within_the_retry(
    local_cluster: ClusterState,
) -> None:
    """A user with no RBAC at all: each kind's LIST is refused once, reported, and not
    repeated for ``forbidden_retry_s`` (the old watch retried every few seconds)."""
    nobody = kube.connect(
        kubeconfig_data={
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": local_cluster.apiserver_url,
                        "certificate-authority": local_cluster.ca_file,
                    },
                }
            ],
            "users": [{"name": "nobody", "user": {"token": local_cluster.nobody_token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nobody"}}],
            "current-context": "c",
        },
        timeout=10.0,
    )
    refused: list[str] = []
    watcher = InventoryWatcher(
        nobody,
        publish=Published(),
        settings=WatchSettings(forbidden_retry_s=60.0, backoff_max_s=0.2),
        on_forbidden=refused.append,
    )
    watcher.start()
    try:
        wait_until(lambda: len(refused) >= 2, timeout=WAIT_S, what="both kinds refused")
        assert sorted(refused) == ["nodes", "pods"]
        # Five times the backoff ceiling: the old loop would have asked again and again.
        deadline = time.monotonic() + 1.0
        wait_until(
            lambda: len(refused) > 2 or time.monotonic() > deadline,
            timeout=WAIT_S,
            what="a second past the first refusals",
        )
        assert sorted(refused) == ["nodes", "pods"]
        health = watcher.health()
        assert not health.synced and health.lists == {}
        assert health.last_error is not None and "forbidden" in health.last_error
    finally:
        assert watcher.stop(timeout=10)
        nobody.close()


# --- fixtures and helpers ----------------------------------------------------------------

StartWatcher = Callable[..., InventoryWatcher]


@pytest.fixture
def start_watcher(local_cluster: ClusterState) -> Iterator[StartWatcher]:
    """Start watchers (on a client of their own unless given one); synced first, stopped after."""
    own_client = kube.connect(kubeconfig=Path(local_cluster.kubeconfig), timeout=10.0)
    started: list[InventoryWatcher] = []

    def start(*, client: kube.Kube | None = None, **kwargs: Any) -> InventoryWatcher:
        watcher = InventoryWatcher(client or own_client, **kwargs)
        started.append(watcher)
        watcher.start()
        assert watcher.wait_synced(WAIT_S), "no inventory published after the first LISTs"
        return watcher

    try:
        yield start
    finally:
        stopped = [watcher.stop(timeout=10) for watcher in started]
        own_client.close()
    assert all(stopped), "a watcher thread did not stop"


class Published:
    """The snapshots a watcher published, in order; filled on the watcher's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: list[GpuInventory] = []

    def __call__(self, inventory: GpuInventory) -> None:
        with self._lock:
            self._snapshots.append(inventory)

    def first(self) -> GpuInventory | None:
        with self._lock:
            return self._snapshots[0] if self._snapshots else None

    def latest(self) -> GpuInventory | None:
        with self._lock:
            return self._snapshots[-1] if self._snapshots else None


class BerthPodEvents:
    """What ``on_berth_pod`` was called with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str, object]] = []

    def __call__(self, job_id: str, event_type: str, pod: object) -> None:
        with self._lock:
            self._calls.append((job_id, event_type, pod))

    def seen(self, job_id: str, event_type: str) -> bool:
        return bool(self.pods(job_id, event_type))

    def pods(self, job_id: str, event_type: str) -> list[object]:
        with self._lock:
            return [pod for j, e, pod in self._calls if (j, e) == (job_id, event_type)]


class ExpiringPodWatches:
    """Real ``kubernetes.watch.Watch`` objects; on request, the next pod watch expires.

    A fresh apiserver still holds its whole history, so no resourceVersion is
    "too old" yet and a real 410 cannot be provoked in the session cluster.
    The expired watch therefore gets the apiserver's own answer, byte for byte
    as kube-apiserver 1.36 sends it, and ``Watch`` parses it as it would off
    the wire. Everything else, the relist included, talks to the real cluster.
    """

    EXPIRED_LINE = (
        b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
        b'"status":"Failure","message":"too old resource version: 1 (820)",'
        b'"reason":"Expired","code":410}}\n'
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self._live: list[Any] = []
        self._expired = False

    def __call__(self) -> Any:
        factory = self

        class _Watch(watch.Watch):  # type: ignore[misc]  # kubernetes is untyped here
            def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                if func.__name__ == "list_pod_for_all_namespaces":
                    if factory._take_arm():
                        func = factory._expired_answer
                    else:
                        factory._track(self)
                return super().stream(func, *args, **kwargs)

        return _Watch()

    def expire_the_pod_watch(self) -> bool:
        """End the live pod watch so that the request resuming it is answered 410 Gone.

        True once that answer was given. Call it until then: a watch whose
        request is still connecting has no socket to shut yet.
        """
        with self._lock:
            if self._expired:
                return True
            self._armed = True
            live = list(self._live)
        for w in live:
            w.stop()
        return False

    def _take_arm(self) -> bool:
        with self._lock:
            armed, self._armed = self._armed, False
            self._expired = self._expired or armed
            return armed

    def _track(self, w: Any) -> None:
        with self._lock:
            self._live.append(w)

    def _expired_answer(self, **_kwargs: Any) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(
            body=_OneShotBody(self.EXPIRED_LINE), status=200, preload_content=False
        )


class _OneShotBody(io.BytesIO):
    """A response body that reports itself closed once read, as a socket's does at EOF."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._size = len(data)

    def isclosed(self) -> bool:  # what urllib3 asks to know that a stream ended
        return self.closed or self.tell() >= self._size


class ApiserverLink:
    """A TCP relay to the apiserver that a test can cut (every connection dropped,
    new ones refused) and restore: an outage without stopping the shared apiserver.

    TLS passes through untouched; the serving certificate is for 127.0.0.1.
    One thread runs a selector loop; ``close()`` (or leaving ``with``) joins it.
    """

    def __init__(self, apiserver_port: int) -> None:
        self._target = ("127.0.0.1", apiserver_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._up = True
        self._cut_requested = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="apiserver-link", daemon=True)
        self._thread.start()

    def __enter__(self) -> ApiserverLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def cut(self) -> None:
        self._up = False
        self._cut_requested.set()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the apiserver link thread did not stop"
        for sock in [*self._peers, self._listener]:
            sock.close()
        self._selector.close()

    def _serve(self) -> None:
        while not self._closing.is_set():
            if self._cut_requested.is_set():
                self._cut_requested.clear()
                for peer in list(self._peers):
                    self._drop(peer)
            for key, _ in self._selector.select(timeout=0.05):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if ready is self._listener:
                    self._accept()
                elif ready in self._peers:
                    self._relay(ready)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        if not self._up:
            client.close()
            return
        upstream = socket.create_connection(self._target, timeout=5)
        for sock in (client, upstream):
            sock.setblocking(True)  # sendall to a loopback peer; small payloads
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[upstream] = upstream, client

    def _relay(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            if data:
                self._peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        """Close a relayed connection's two sockets (once: the peer may have gone first)."""
        peer = self._peers.pop(sock, None)
        if peer is None:
            return
        del self._peers[peer]
        for s in (sock, peer):
            self._selector.unregister(s)
            s.close()


def _client_through(link: ApiserverLink, cluster_state: ClusterState) -> kube.Kube:
    config = yaml.safe_load(Path(cluster_state.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{link.port}"
    return kube.connect(kubeconfig_data=config, timeout=10.0)


def _pod(name: str, *, gpus: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": NODE,
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}},
                }
            ],
        },
    }


def _published_agrees(
    published: Published, k: kube.Kube, *, counting: str | None = None, without: str | None = None
) -> bool:
    """Published free GPUs of NODE equal a fresh LIST's, which has ``counting``, not ``without``."""
    latest = published.latest()
    node = k.call(k.core.read_node, NODE)
    pods = _pods_on_node(k)
    if counting is not None and counting not in pods:
        return False
    if without is not None and without in pods:
        return False
    truth = build_inventory([node], [p for p in pods.values() if is_foreign_pod(p)])
    return latest is not None and _free_gpus(latest) == _free_gpus(truth)


def _pods_on_node(k: kube.Kube) -> dict[str, Any]:
    pods = k.call(k.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={NODE}")
    return {f"{p.metadata.namespace}/{p.metadata.name}": p for p in pods.items}


def _free_gpus(inventory: GpuInventory) -> int | None:
    node = inventory.node(NODE)
    return None if node is None else node.free.gpus.get(GPU, 0)


def _inventory_from_a_fresh_list(k: kube.Kube) -> GpuInventory:
    nodes = k.call(k.core.list_node).items
    pods = k.call(k.core.list_pod_for_all_namespaces).items
    return build_inventory(nodes, [p for p in pods if is_foreign_pod(p)])
