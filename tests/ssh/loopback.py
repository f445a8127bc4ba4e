"""A stand-in kubelet for Berth's SSH pods: real OpenSSH sshd on loopback addresses.

KWOK marks pods Running but starts nothing. This class watches one namespace
of the real apiserver and does, for Berth's pods only, what a kubelet and the
pod's container would do:

* **the jump pod** (label ``berth.dev/jump-host``): it writes the pod's
  Secret to a directory, as a Secret volume would, and runs
  ``/usr/sbin/sshd -D -e -f <the Secret's sshd_config>`` with the mount path
  rewritten to that directory, listening on ``127.0.0.1:<the Service's
  nodePort>``, which is what ``proxy_jump`` (``127.0.0.1`` + that port) names.
  Without the Service, nothing listens, as on a real node.
* **run pods** (label ``berth.dev/job`` and a Secret volume with keys): sshd
  with the pod's own host key and ``authorized_keys`` from its Secret and the
  pod script's options (``workers.podspec.RUN_SSHD_ARGS``), on the pod's IP
  (the local cluster's pod CIDR is in 127.0.0.0/8) and port 10022.
* anything a test asks for through ``apps`` (a service's HTTP server), also on
  the pod's IP.

Secret changes are written into the files in place (sshd is not restarted),
as the kubelet refreshes a Secret volume. A pod that disappears takes its
processes and their open connections with it; a process that dies is started
again, as ``restartPolicy: Always`` would. Every process is started and stopped
by PID. The jump sshd logs at DEBUG1 so tests can see which connections it
forwarded (sshd's own record of each ``direct-tcpip`` channel).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.local.processes import ProcessRecord, is_running, start_process, stop_process
from shared import kube
from shared.errors import BerthError
from shared.ssh import HOST_KEY_FILE
from workers.jumphost_objects import LABEL_JUMP, MOUNT
from workers.podspec import RUN_SSHD_ARGS

SSHD = "/usr/sbin/sshd"
_POLL_S = 0.1  # a kubelet reacts within a second; tests wait on what this makes happen
_BERTH = f"{kube.LABEL_MANAGED}={kube.MANAGED_BY}"

AppFor = Callable[[Any, Path], list[str] | None]
"""(V1Pod, its working directory) -> argv of the pod's main process, or None."""


@dataclass
class _Pod:
    uid: str
    name: str
    directory: Path
    secret_version: str = ""
    processes: dict[str, ProcessRecord] | None = None


class LoopbackPods:
    def __init__(
        self, k: kube.Kube, namespace: str, workdir: Path, *, apps: AppFor | None = None
    ) -> None:
        self.k = k
        self.namespace = namespace
        self.workdir = workdir
        self.apps = apps or (lambda _pod, _dir: None)
        self.pods: dict[str, _Pod] = {}
        self.errors: list[str] = []
        self._secrets: dict[str, Any] = {}
        self._services: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loopback-kubelet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for pod in self.pods.values():
                _stop_all(pod)
            self.pods.clear()

    def process(self, pod_prefix: str, role: str) -> ProcessRecord | None:
        """The running process ``role`` (``sshd`` or ``app``) of the first pod named so."""
        with self._lock:
            for pod in self.pods.values():
                if pod.name.startswith(pod_prefix) and pod.processes:
                    record = pod.processes.get(role)
                    if record is not None and is_running(record):
                        return record
        return None

    def _loop(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self._sync()
            except BerthError as e:  # the apiserver blinked: try again next poll
                self.errors.append(str(e))
            except Exception:  # a kubelet keeps going; the test sees it in ``errors``
                self.errors.append(traceback.format_exc())

    def _sync(self) -> None:
        k, ns = self.k, self.namespace
        # Three lists a poll, however many pods: the apiserver is shared with the tests.
        pods = k.call(k.core.list_namespaced_pod, ns, label_selector=_BERTH).items
        secrets = k.call(k.core.list_namespaced_secret, ns, label_selector=_BERTH).items
        services = k.call(k.core.list_namespaced_service, ns).items
        self._secrets = {s.metadata.name: s for s in secrets}
        self._services = {s.metadata.name: s for s in services}
        alive = {p.metadata.uid: p for p in pods if _running(p)}
        with self._lock:
            for uid in list(self.pods):
                if uid not in alive:
                    _stop_all(self.pods.pop(uid))
            for uid, pod in alive.items():
                state = self.pods.setdefault(
                    uid, _Pod(uid=uid, name=pod.metadata.name, directory=self.workdir / uid)
                )
                wanted = self._wanted(pod, state)
                _converge(state, wanted)

    def _wanted(self, pod: Any, state: _Pod) -> dict[str, list[str]]:
        labels = pod.metadata.labels or {}
        secret = _secret_volume(pod)
        if secret is None:
            return {}
        mounted = self._mount(secret, state)
        if mounted is None:
            return {}
        wanted: dict[str, list[str]] = {}
        if LABEL_JUMP in labels:
            port = self._node_port(labels[LABEL_JUMP])
            if port is not None:
                wanted["sshd"] = self._jump_sshd(mounted, port)
        elif kube.LABEL_JOB in labels:
            wanted["sshd"] = self._run_sshd(mounted, pod.status.pod_ip)
            app = self.apps(pod, state.directory)
            if app:
                wanted["app"] = app
        return wanted

    def _mount(self, secret_name: str, state: _Pod) -> Path | None:
        """Write the Secret's keys as files, as a Secret volume would; None if it is gone."""
        secret = self._secrets.get(secret_name)
        if secret is None:
            return None
        mounted = state.directory / "secret"
        if secret.metadata.resource_version == state.secret_version:
            return mounted
        mounted.mkdir(parents=True, exist_ok=True)
        for key, value in (secret.data or {}).items():
            tmp = mounted / f".{key}.tmp"
            tmp.write_bytes(base64.b64decode(value))
            tmp.chmod(0o600)  # sshd refuses a host key that others can read
            tmp.replace(mounted / key)  # atomic, like the kubelet's symlink swap
        state.secret_version = secret.metadata.resource_version
        return mounted

    def _node_port(self, service: str) -> int | None:
        svc = self._services.get(service)
        if svc is None:
            return None
        ports = svc.spec.ports or []
        return int(ports[0].node_port) if ports and ports[0].node_port else None

    def _jump_sshd(self, mounted: Path, port: int) -> list[str]:
        config = (mounted / "sshd_config").read_text().replace(MOUNT, str(mounted))
        path = mounted.parent / "sshd_config"
        path.write_text(config)
        return [
            SSHD,
            "-D",
            "-e",
            "-f",
            str(path),
            "-o",
            f"ListenAddress=127.0.0.1:{port}",  # the node's address and the NodePort
            "-o",
            "PidFile=none",
            "-o",
            "LogLevel=DEBUG1",  # so tests can read which channels it forwarded
        ]

    def _run_sshd(self, mounted: Path, pod_ip: str) -> list[str]:
        # The image's own sshd_config is empty here; the pod script's options follow.
        config = mounted.parent / "image_sshd_config"
        config.write_text("PidFile none\n")
        return [
            SSHD,
            "-D",
            "-e",
            "-f",
            str(config),
            "-h",
            str(mounted / HOST_KEY_FILE),
            *RUN_SSHD_ARGS,
            "-o",
            f"ListenAddress={pod_ip}",
            # The pod copies authorized_keys into ~/.ssh; here it is read in place,
            # from a temporary directory StrictModes would refuse.
            "-o",
            f"AuthorizedKeysFile={mounted / 'authorized_keys'}",
            "-o",
            "StrictModes=no",
        ]


def _running(pod: Any) -> bool:
    return (
        pod.metadata.deletion_timestamp is None
        and pod.status is not None
        and pod.status.phase == "Running"
        and bool(pod.status.pod_ip)
    )


def _secret_volume(pod: Any) -> str | None:
    for volume in pod.spec.volumes or []:
        if volume.secret is not None:
            return str(volume.secret.secret_name)
    return None


def _converge(state: _Pod, wanted: dict[str, list[str]]) -> None:
    running = state.processes or {}
    for role in list(running):
        if role not in wanted or running[role].argv != wanted[role]:
            _stop_tree(running.pop(role))
    for role, argv in wanted.items():
        record = running.get(role)
        if record is None or not is_running(record):
            if record is not None:
                _stop_tree(record)  # died: start again, as restartPolicy Always would
            running[role] = start_process(f"{state.name}-{role}", argv, log_dir=state.directory)
    state.processes = running


def _stop_all(state: _Pod) -> None:
    for record in (state.processes or {}).values():
        _stop_tree(record)
    state.processes = {}


def _stop_tree(record: ProcessRecord) -> None:
    """Stop the process and its direct children: sshd serves each connection in a
    child of its own session, and a deleted pod takes its connections with it."""
    if is_running(record):
        for child in _children(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
    stop_process(record, grace_s=5)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[-1].split()[1]) == pid:
            found.append(int(entry.name))
    return found
