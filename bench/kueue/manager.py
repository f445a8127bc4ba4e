"""Kueue's manager as a host process on the bench cluster, with its webhooks answering.

The local control plane runs on loopback with no kube-proxy, so a webhook
behind an in-cluster Service could never be dialled. Instead the manager runs
beside the apiserver as a host process with the cluster admin's kubeconfig, and
serves its webhooks on 127.0.0.1 with a certificate the cluster's own CA issues
(:func:`cli.local.pki.issue_serving_pair`). The webhook configurations from
Kueue's module are registered with ``clientConfig.url`` pointing there, and
only the ones this bench exercises (Kueue's own kinds and ``batch/v1`` Jobs):
the module's list also holds ``failurePolicy: Fail`` hooks for Pods and
Deployments, which would put the manager in the path of every Berth pod in the
same cluster although the ``pod`` integration is off.

Every address the manager opens (webhooks, metrics, health) is on loopback; the
visibility API server, which would bind all interfaces, is switched off.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from bench.common import ensure_namespace
from cli.local import pki as cluster_pki
from cli.local.cluster import ClusterState
from cli.local.processes import (
    ProcessRecord,
    free_port,
    is_running,
    log_tail,
    start_process,
    stop_process,
)
from shared import kube
from shared.errors import KubeConflict, KubeError

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
VERSION = "v0.17.0"  # bench/kueue/build.sh's default; the newest served that builds here
MODULE = Path.home() / "go" / "pkg" / "mod" / "sigs.k8s.io" / f"kueue@{VERSION}"
NAMESPACE = "kueue-system"  # the manager's own namespace (Configuration.namespace)
GROUP = "kueue.x-k8s.io"
API = "v1beta2"  # the CRDs' storage version in v0.17.0
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# Kueue's shipped manager config asks for 50 QPS / burst 100; the bench cluster's
# scheduler and controller-manager run at 1000/2000 (cli/local/cluster.py), and
# Berth's Python clients have no limit, so Kueue gets the same room.
CLIENT_QPS = 1000
CLIENT_BURST = 2000


class KueueUnavailable(Exception):
    """Kueue could not be built or started; the message says which step and why."""


@dataclass
class KueueManager:
    record: ProcessRecord
    webhook_port: int
    version: str

    def log(self, lines: int = 40) -> str:
        return log_tail(self.record, lines)


def build() -> Path:
    """The Kueue binary, built from the module proxy on the first call (a no-op after)."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=3600,  # a cold build on two shared cores took ~10 min
        check=False,
    )
    if done.returncode != 0:
        raise KueueUnavailable(f"{BUILD_SCRIPT} failed: {done.stderr[-1500:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "kueue"


def start(state: ClusterState, k: kube.Kube, directory: Path) -> KueueManager:
    """Install the CRDs, start the manager, register its webhooks, wait until they answer."""
    binary = build()
    directory.mkdir(parents=True, exist_ok=True)
    ensure_namespace(k, NAMESPACE)
    _install_crds(k)
    certs = directory / "certs"
    certs.mkdir(exist_ok=True)
    pki = cluster_pki.ensure_pki(Path(state.directory) / "pki")
    cluster_pki.issue_serving_pair(
        pki, "kueue-webhook", ["127.0.0.1"], certs / "tls.crt", certs / "tls.key"
    )
    webhook_port, health_port, metrics_port = free_port(), free_port(), free_port()
    config = directory / "kueue-config.yaml"
    config.write_text(
        yaml.safe_dump(_configuration(webhook_port, health_port, metrics_port, certs))
    )
    record = start_process(
        "kueue-manager",
        [
            *_with_metrics_certs(directory, certs),
            str(binary),
            f"--config={config}",
            f"--kubeconfig={state.kubeconfig}",
            "--zap-log-level=info",
        ],
        log_dir=directory / "logs",
        env={"KUBECONFIG": state.kubeconfig},
    )
    manager = KueueManager(record=record, webhook_port=webhook_port, version=VERSION)
    try:
        _wait_healthy(manager, health_port)
        _register_webhooks(k, webhook_port, Path(pki.ca_cert).read_bytes())
    except BaseException:
        stop_process(record)
        raise
    return manager


def stop(k: kube.Kube, manager: KueueManager) -> None:
    """Remove the webhook configurations first (they fail closed), then stop the process."""
    admission = client.AdmissionregistrationV1Api(k.api)
    for delete in (
        admission.delete_mutating_webhook_configuration,
        admission.delete_validating_webhook_configuration,
    ):
        with contextlib.suppress(KubeError):  # gone already, or never made
            k.call(delete, _WEBHOOK_NAME)
    stop_process(manager.record)


# --- the pieces ---------------------------------------------------------------------------

_WEBHOOK_NAME = "bench-kueue"
# Kueue's own kinds and batch/v1 Jobs: the ones the `peers` bench creates.
_KEPT_PATHS = ("-kueue-x-k8s-io-", "-batch-v1-job")


def _configuration(webhook: int, health: int, metrics: int, certs: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "clientConnection": {"qps": CLIENT_QPS, "burst": CLIENT_BURST},
        # As Kueue ships it (config/components/manager/controller_manager_config.yaml);
        # left out, every controller would reconcile one object at a time.
        "controller": {
            "groupKindConcurrency": {
                "Job.batch": 5,
                "Pod": 5,
                "Workload.kueue.x-k8s.io": 5,
                "LocalQueue.kueue.x-k8s.io": 1,
                "Cohort.kueue.x-k8s.io": 1,
                "ClusterQueue.kueue.x-k8s.io": 1,
                "ResourceFlavor.kueue.x-k8s.io": 1,
            }
        },
        "integrations": {"frameworks": ["batch/job"]},
        # The on-demand visibility API server binds every interface; nothing here reads it.
        "featureGates": {"VisibilityOnDemand": False},
    }


def _with_metrics_certs(directory: Path, certs: Path) -> list[str]:
    """The argv prefix that shows ``certs`` at /etc/kueue/metrics/certs to the manager only.

    With its own certificate management off, Kueue v0.17.0 reads the metrics server's
    pair from that fixed path (cmd/kueue/main.go), where a Deployment mounts a Secret.
    Rather than write into the host's /etc, the manager runs in a private mount
    namespace where /etc is an overlay whose upper layer (ours) holds the pair; the
    host's /etc is unchanged, and ``exec`` keeps the PID the manager's.
    """
    upper, work = directory / "etc-upper", directory / "etc-work"
    target = upper / "kueue" / "metrics" / "certs"
    target.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        (target / name).write_bytes((certs / name).read_bytes())
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    script = f'{mount} && exec "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _install_crds(k: kube.Kube) -> None:
    ext = client.ApiextensionsV1Api(k.api)
    bases = MODULE / "config" / "components" / "crd" / "bases"
    files = sorted(bases.glob("*.yaml"))
    if not files:
        raise KueueUnavailable(f"no CRDs under {bases}: is the module in the Go module cache?")
    for path in files:
        for body in yaml.safe_load_all(path.read_text()):
            if not body:
                continue
            body.get("spec", {}).pop("conversion", None)  # a webhook conversion needs a Service
            with contextlib.suppress(KubeConflict):
                k.call(ext.create_custom_resource_definition, body)
    deadline = time.monotonic() + 60
    names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in files}
    while time.monotonic() < deadline:
        listed = k.call(ext.list_custom_resource_definition).items
        established = {
            c.metadata.name
            for c in listed
            if any(
                x.type == "Established" and x.status == "True" for x in c.status.conditions or []
            )
        }
        if names <= established:
            return
        time.sleep(0.2)
    raise KueueUnavailable(f"Kueue's CRDs not Established in 60 s: {sorted(names - established)}")


def _wait_healthy(manager: KueueManager, port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not is_running(manager.record):
            raise KueueUnavailable(f"the Kueue manager exited:\n{manager.log(60)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise KueueUnavailable(f"the Kueue manager was not ready in 120 s:\n{manager.log(60)}")


def _register_webhooks(k: kube.Kube, port: int, ca: bytes) -> None:
    bundle = base64.b64encode(ca).decode()
    path = MODULE / "config" / "components" / "webhook" / "manifests.yaml"
    admission = client.AdmissionregistrationV1Api(k.api)
    for body in yaml.safe_load_all(path.read_text()):
        if not body:
            continue
        hooks = []
        for hook in body.get("webhooks", []):
            service = hook["clientConfig"].get("service", {})
            hook_path = service.get("path", "")
            if not any(kept in hook_path for kept in _KEPT_PATHS):
                continue
            hook = copy.deepcopy(hook)
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{hook_path}",
                "caBundle": bundle,
            }
            hooks.append(hook)
        body = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {"name": _WEBHOOK_NAME},
            "webhooks": hooks,
        }
        create = (
            admission.create_mutating_webhook_configuration
            if body["kind"] == "MutatingWebhookConfiguration"
            else admission.create_validating_webhook_configuration
        )
        k.call(create, body)
