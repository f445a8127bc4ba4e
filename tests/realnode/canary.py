"""Before the real-node tier's tests: one plain pod on each node prints a line.

If a node cannot run a container (an image that did not import, a kubelet that
lost its way, a full disk), every test of the tier would wait out its own
timeout, one after the other, for the same reason: in CI that once outlasted
the whole run and printed nothing but F's. So the tier's cluster fixture asks
each node for a one-line pod first and, if one does not come back, fails with
what explains it: the pods' state and events, the nodes' conditions, the
kubelets' and containerds' last lines, the disk and the inotify limit. The
fixture's failure is then every test's, at once.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from cli.local import cluster
from shared import kube
from shared.errors import KubeError

CANARY_NAMESPACE = "berth-canary"
_TIMEOUT_S = 180.0  # the first pods on fresh nodes: sandboxes, CNI, images unpacked on 2 cores
_LOG_TAIL = 40


def check_nodes_run_pods(state: cluster.ClusterState, k: kube.Kube) -> None:
    """Run one pod per real node to its end; AssertionError with the diagnosis if not."""
    assert state.real_nodes is not None
    k.call(k.core.create_namespace, {"metadata": {"name": CANARY_NAMESPACE}})
    deadline = time.monotonic() + _TIMEOUT_S
    pending = {f"canary-{node}": node for node in state.real_nodes.names}
    for name, node in pending.items():
        _create(k, _pod(name, node, state), deadline)
    failed = False
    while pending and not failed and time.monotonic() < deadline:
        for name in sorted(pending):
            phase = k.call(k.core.read_namespaced_pod, name, CANARY_NAMESPACE).status.phase
            failed = failed or phase == "Failed"
            if phase == "Succeeded":
                out = k.call(k.core.read_namespaced_pod_log, name, CANARY_NAMESPACE)
                if "canary ran" in out:
                    del pending[name]
        time.sleep(0 if not pending else 1)
    if pending:
        raise AssertionError(
            f"the real nodes cannot run a pod ({', '.join(sorted(pending))} did not print"
            f" in {_TIMEOUT_S:.0f} s); every test of this tier would wait for the same."
            f"\n{diagnosis(state, k)}"
        )
    k.call(k.core.delete_namespace, CANARY_NAMESPACE)


def _create(k: kube.Kube, pod: dict[str, Any], deadline: float) -> None:
    # The namespace's default ServiceAccount comes from the controller-manager a moment
    # after the namespace; until then the apiserver refuses pods.
    while True:
        try:
            k.call(k.core.create_namespaced_pod, CANARY_NAMESPACE, pod)
            return
        except KubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def diagnosis(state: cluster.ClusterState, k: kube.Kube) -> str:
    """What a failing real node looks like from outside, in one text."""
    parts = []
    try:
        for pod in k.call(k.core.list_namespaced_pod, CANARY_NAMESPACE).items:
            statuses = [f"{c.name}: {c.state}" for c in (pod.status.container_statuses or [])]
            parts.append(f"pod {pod.metadata.name}: {pod.status.phase} {statuses}")
        events = k.call(k.core.list_namespaced_event, CANARY_NAMESPACE).items
        parts += [f"event {e.involved_object.name}: {e.reason}: {e.message}" for e in events]
        for node in k.call(k.core.list_node).items:
            conditions = [f"{c.type}={c.status}" for c in node.status.conditions or []]
            parts.append(f"node {node.metadata.name}: {' '.join(conditions)}")
    except KubeError as e:  # the diagnosis must not hide the failure
        parts.append(f"(the apiserver did not answer: {e})")
    for name, record in sorted(state.processes.items()):
        if name.startswith(("kubelet-", "containerd-")):
            parts.append(f"--- last lines of {name} ({record.log})\n{_tail(Path(record.log))}")
    usage = shutil.disk_usage(state.directory)
    parts.append(f"disk free under {state.directory}: {usage.free / 2**30:.1f} GiB")
    inotify = Path("/proc/sys/fs/inotify/max_user_instances")
    if inotify.exists():
        parts.append(f"fs.inotify.max_user_instances: {inotify.read_text().strip()}")
    return "\n".join(parts)


def _pod(name: str, node: str, state: cluster.ClusterState) -> dict[str, Any]:
    assert state.real_nodes is not None
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": state.real_nodes.images["run"],
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo canary ran"],
                }
            ],
        },
    }


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(unreadable: {e})"
    return "\n".join(lines[-_LOG_TAIL:])
