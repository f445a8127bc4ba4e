"""The SSH Secret a user's run pods share in a project's namespace.

A run pod's sshd needs the keys that may log in (the user's and Berth's own, both
public) and a host key Berth made, so the client can pin it before the pod starts.
Until the eleventh session each job had a Secret of its own for that: one more
object to create and delete per job, which halved the pods the apiserver could
take in a burst (bench scenario 1: 182 pods/s alone, 94/s as pod + Secret pairs)
and was most of a plain task's teardown.

Now the keys and one host key live in one immutable Secret per project and key
set, named after a digest of both (``berth-ssh-<digest>``), so

- a second provisioning, in any worker, asks for the same name and adopts
  whatever the first made: the host key's two halves come from the same Secret,
  so the pod and the client always agree on it;
- a changed key set (a user's new key, Berth's new key) gets a new name, and no
  running pod sees its keys change under it;
- the kubelet need not watch it (``immutable``), which is load a real cluster saves.

The cost, chosen knowingly: a user's runs in a project share their sshd host key,
so code in one of that user's pods could pretend to be another of that user's pods'
sshd to someone on the pod network. The key still pins every pod against anyone
else; dstack does not pin pod host keys at all. A job whose env names project
secrets, or whose image needs registry credentials, still gets a Secret of its own
(``workers/podspec.py``): those are the job's, not the user's.

Beat's reaper (``workers/orphans.py``) deletes an SSH Secret that no Berth pod in
the namespace names (label :data:`LABEL_SSH_KEYS`) in two of its passes at least
:data:`UNUSED_FOR_S` apart: a worker takes a Secret it met to be there for
:data:`KNOWN_FOR_S`, so one it met before the first pass has forgotten it by the
delete, and one it met since has created a pod with it, which the second pass
sees. Left is a pod created in the moment between the second pass's last read and
its delete: it waits for its volume until the next provisioning with that key set
(at most :data:`KNOWN_FOR_S` on) creates the Secret again, whose host key's halves
again agree; the kubelet mounts it then.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable

from shared import kube
from shared.clusters import Cluster
from shared.errors import KubeConflict
from shared.kube.raw import Raw, dig, labels_of
from shared.ssh import HOST_KEY_FILE, HOST_KEY_PUB_FILE, new_host_key, public_key_text
from shared.state.store import Store, wrapped

LABEL_SSH_KEYS = "berth.dev/ssh-keys"
"""On the SSH Secret and on every pod that mounts it: the digest naming the Secret."""
PREFIX = "berth-ssh-"
# How long a worker takes a Secret it made or met to be still there. Only the reaper
# deletes one, and only when no pod names it; this bounds how long a worker would go
# on naming one deleted by hand.
KNOWN_FOR_S = 60.0

UNUSED_FOR_S = 2 * KNOWN_FOR_S
"""How long the reaper sees a Secret unnamed by any pod before it deletes it."""

# A mark outlives many passes (30 s apart); one left by a Secret deleted by hand goes.
_MARK_TTL_S = 3600

_known: dict[tuple[str, str, str], float] = {}
_known_lock = threading.Lock()


def digest(project: str, keys: tuple[str, ...]) -> str:
    """The key set's digest: the Secret's name suffix and the pods' label value."""
    text = "\0".join((project, *keys))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def name_for(project: str, keys: tuple[str, ...]) -> str:
    return PREFIX + digest(project, keys)


def ensure(
    cluster: Cluster,
    project: str,
    keys: tuple[str, ...],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Create the project's SSH Secret for ``keys`` unless it exists; its name.

    One create per key set per worker process per :data:`KNOWN_FOR_S`, not one per job;
    409 means another delivery or worker made it first, which is as good."""
    name = name_for(project, keys)
    key = (cluster.backend.cluster_key(), cluster.namespace, name)
    now = clock()
    with _known_lock:
        if _known.get(key, -KNOWN_FOR_S) > now - KNOWN_FOR_S:
            return name
    k = cluster.kube
    body = secret(project, keys)
    # 409: made already, by this key set's first provisioning.
    with contextlib.suppress(KubeConflict):
        k.call_bytes(k.core.create_namespaced_secret, cluster.namespace, body)
    with _known_lock:
        _known[key] = now
    return name


def secret(project: str, keys: tuple[str, ...], host_key: str | None = None) -> dict[str, object]:
    """The Secret's body, with a fresh host key unless one is given."""
    host_key = host_key or new_host_key()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name_for(project, keys),
            "labels": {
                kube.LABEL_MANAGED: kube.MANAGED_BY,
                kube.LABEL_PROJECT: project,
                LABEL_SSH_KEYS: digest(project, keys),
            },
        },
        "type": "Opaque",
        "immutable": True,
        "data": {
            "authorized_keys": kube.secret_data("\n".join(keys) + "\n"),
            HOST_KEY_FILE: kube.secret_data(host_key),
            HOST_KEY_PUB_FILE: kube.secret_data(public_key_text(host_key) + "\n"),
        },
    }


def unused(store: Store, cluster: Cluster, projects: set[str], pods: list[Raw]) -> list[Raw]:
    """``projects``' SSH Secrets in the cluster's namespace that no pod of ``pods`` (all of
    Berth's there, any phase, any project; the apiserver's JSON) names, and that earlier
    passes already saw unnamed :data:`UNUSED_FOR_S` ago: the reaper's to delete (by uid)."""
    k, ns = cluster.kube, cluster.namespace
    named = {labels_of(p).get(LABEL_SSH_KEYS) for p in pods}
    selector = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY},{LABEL_SSH_KEYS}"
    now = time.time()
    due = []
    listed = k.call_json(k.core.list_namespaced_secret, ns, label_selector=selector)
    for obj in listed.get("items") or ():
        labels = labels_of(obj)
        if labels.get(kube.LABEL_PROJECT) not in projects:
            continue
        digest_ = labels.get(LABEL_SSH_KEYS, "")
        name = str(dig(obj, "metadata", "name"))
        mark = store.key("ssh-unused", cluster.backend.cluster_key(), ns, name)
        if digest_ in named:
            _unmark(store, mark)
            continue
        with wrapped():
            store.r.set(mark, str(now), nx=True, ex=_MARK_TTL_S)
            since = float(store.r.get(mark) or now)
        if now - since < UNUSED_FOR_S:
            continue
        # Read once more right before the delete: a pod may have been made with it since.
        again = f"{LABEL_SSH_KEYS}={digest_}"
        if k.call(k.core.list_namespaced_pod, ns, label_selector=again, limit=1).items:
            _unmark(store, mark)
            continue
        _unmark(store, mark)  # a Secret made again under the name starts unmarked
        due.append(obj)
    return due


def forget() -> None:
    """Drop what this process knows (tests that delete Secrets behind its back)."""
    with _known_lock:
        _known.clear()


def _unmark(store: Store, mark: str) -> None:
    with wrapped():
        store.r.delete(mark)
