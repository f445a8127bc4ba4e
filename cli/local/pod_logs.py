"""Pod logs on the local cluster: what ``kubectl logs`` returns for a KWOK pod.

KWOK runs no containers, so nothing writes logs. It does serve the kubelet's
log endpoint, though, and answers it from files we name. The whole chain stays
on 127.0.0.1 and is the one Berth uses against a real cluster::

    client ── GET pods/<pod>/log ──▶ kube-apiserver
      ──▶ KWOK's kubelet server at the node's InternalIP (127.0.0.1, --node-ip)
          and status.daemonEndpoints.kubeletEndpoint.Port (--node-port), over
          TLS with a certificate from our CA (--kubelet-certificate-authority)
      ──▶ the file named by the pod's ``Logs`` object, else an empty file.

The apiserver gets no kubelet client certificate: KWOK's server requests none
(plain ``ServeTLS``), so it would authenticate nothing; it listens on loopback only.

A pod's log source is a ``Logs`` object (``kwok.x-k8s.io/v1alpha1``) with the
pod's own namespace and name. KWOK reads them from the apiserver
(``--enable-crds=Logs``; we install the CRD before KWOK starts), so tests set
a pod's logs at run time with :func:`set_pod_logs`, before or after the pod
exists. Pods without one match a ``ClusterLogs`` default from
:func:`write_kwok_config` and have empty logs, like a real container that
printed nothing. KWOK learns of ``Logs`` objects through a watch: a few
milliseconds after they are created, and up to about a second after KWOK
itself (re)starts; until then it serves the empty default, so readers poll.

Files are in the CRI format kubelets read (``<RFC3339Nano> stdout F <line>``).
With ``follow=true`` KWOK tails the file, so lines appended later with
:func:`write_log_lines` reach the reader. KWOK treats every container as
running, so it never ends a follow by itself: the reader must stop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes import client

from shared import kube
from shared.errors import KubeConflict, KubeNotFound, LocalClusterError

CRD_FILE = Path(__file__).with_name("kwok-logs-crd.yaml")
LOGS_GROUP = "kwok.x-k8s.io"
LOGS_VERSION = "v1alpha1"
LOGS_PLURAL = "logs"
KWOK_CONFIG = "kwok-logs.yaml"
"""KWOK's extra config file in the cluster state directory: the ClusterLogs default."""
LOGS_DIR = "pod-logs"
"""Under the cluster state directory: one subdirectory per namespace, one file per pod."""


def set_pod_logs(
    k: kube.Kube,
    cluster_dir: Path,
    *,
    namespace: str,
    pod: str,
    lines: Iterable[str] = (),
) -> Path:
    """Make ``lines`` the logs of every container of ``pod``; return the log file.

    Idempotent: a second call rewrites the file and keeps the ``Logs`` object.
    Append to the returned file with :func:`write_log_lines` to feed a follower.
    """
    path = cluster_dir / LOGS_DIR / namespace / f"{pod}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    write_log_lines(path, lines)
    body = {
        "apiVersion": f"{LOGS_GROUP}/{LOGS_VERSION}",
        "kind": "Logs",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"logs": [{"logsFile": str(path)}]},  # no "containers": every container
    }
    custom = client.CustomObjectsApi(k.api)
    with contextlib.suppress(KubeConflict):  # same name, same file: adopt it
        k.call(
            custom.create_namespaced_custom_object,
            LOGS_GROUP,
            LOGS_VERSION,
            namespace,
            LOGS_PLURAL,
            body,
        )
    return path


def write_log_lines(
    path: Path, lines: Iterable[str], *, stream: Literal["stdout", "stderr"] = "stdout"
) -> None:
    """Append ``lines`` to a CRI log file, stamped now, in one write a follower sees whole."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    records = [
        f"{stamp} {stream} F {part}\n" for line in lines for part in line.splitlines() or [""]
    ]
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(records))


def write_kwok_config(cluster_dir: Path) -> Path:
    """Write KWOK's default ``ClusterLogs`` (an empty file for every pod); return its path."""
    logs_dir = cluster_dir / LOGS_DIR
    logs_dir.mkdir(parents=True, exist_ok=True)
    empty = logs_dir / "no-output.log"
    empty.touch()
    doc = {
        "apiVersion": f"{LOGS_GROUP}/{LOGS_VERSION}",
        "kind": "ClusterLogs",
        "metadata": {"name": "berth-no-output"},
        "spec": {"logs": [{"logsFile": str(empty)}]},  # no selector: every pod
    }
    path = cluster_dir / KWOK_CONFIG
    path.write_text(
        "# Written by cli/local/pod_logs.py at every start; see that module.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return path


def install_crd(kubeconfig: Path, *, deadline: float) -> None:
    """Create the ``Logs`` CRD and wait until it is served, so KWOK's watch starts cleanly."""
    body: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    name = body["metadata"]["name"]
    k = kube.connect(kubeconfig=kubeconfig, timeout=10.0)
    try:
        ext = client.ApiextensionsV1Api(k.api)
        # etcd data persists between ups, and so does the CRD.
        with contextlib.suppress(KubeConflict):
            k.call(ext.create_custom_resource_definition, body)
        while time.monotonic() < deadline:
            if _established(k, ext, name):
                return
            time.sleep(0.1)
    finally:
        k.close()
    raise LocalClusterError(f"the CRD {name} was not Established in time")


def _established(k: kube.Kube, ext: client.ApiextensionsV1Api, name: str) -> bool:
    try:
        crd = k.call(ext.read_custom_resource_definition, name)
    except KubeNotFound:
        return False
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)
