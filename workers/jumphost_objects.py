"""The jump host's Kubernetes objects, as pure functions of the server config.

One jump host per cluster, namespace and NodePort: a NodePort is cluster-wide,
so projects naming the same cluster, namespace and port share one jump host,
and its ``authorized_keys`` holds all their members. Everything is named
``berth-jump-<port>`` and labelled, so creating twice finds the first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from shared import kube, ssh
from shared.configuration.server import DEFAULT_CLUSTER, ServerConfig
from shared.policy.pod_security import RESTRICTED_SSH_USER, Level, restrict_pod_spec, stricter
from shared.ssh import HOST_KEY_FILE, HOST_KEY_PUB_FILE

LABEL_JUMP = "berth.dev/jump-host"
ANNOTATION_KEYS = "berth.dev/authorized-keys-sha256"
ANNOTATION_CONFIG = "berth.dev/sshd-config-sha256"
MOUNT = "/etc/berth-jump"
SSHD_PORT = 2222  # inside the pod; the Service maps the NodePort onto it


@dataclass(frozen=True)
class JumpHostTarget:
    """One jump host to keep: where it lives and the projects it serves."""

    id: str
    name: str
    namespace: str
    cluster_key: str
    projects: tuple[str, ...]
    hostname: str
    port: int | None
    pod_security: Level = "privileged"
    """The strictest ``pod_security`` of the backends it serves (the namespace's label
    may make it stricter still; see :mod:`workers.jumphost`)."""
    uid: int | None = 1000
    """``pod_security_uid`` of the first backend: the UID a restricted jump pod runs as."""
    cluster: str = DEFAULT_CLUSTER
    """The cluster's name in the projects it serves (each context is one cluster)."""


@dataclass(frozen=True)
class JumpObjects:
    secret: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]


def jump_host_targets(server: ServerConfig) -> list[JumpHostTarget]:
    """The jump hosts the server config asks for: one per cluster of each project,
    projects grouped by cluster and port."""
    groups: dict[tuple[str, str, int | None], list[tuple[str, str]]] = {}
    levels: dict[tuple[str, str, int | None], Level] = {}
    uids: dict[tuple[str, str, int | None], int | None] = {}
    names: dict[str, str] = {}
    for project in server.projects:
        for backend in (c for b in project.backends for c in b.clusters()):
            proxy_jump = backend.jump_host_for(backend.context_name() or "")
            if proxy_jump is None:
                continue  # no jump host configured: no SSH access to this cluster
            key = (backend.cluster_key(), backend.namespace, proxy_jump.port)
            groups.setdefault(key, []).append((project.name, proxy_jump.hostname))
            levels[key] = stricter(levels.get(key, "privileged"), backend.pod_security)
            uids.setdefault(key, backend.pod_security_uid)
            names.setdefault(backend.cluster_key(), backend.cluster_name())
    targets = []
    for (cluster_key, namespace, port), members in groups.items():
        name = f"berth-jump-{port or 'auto'}"
        targets.append(
            JumpHostTarget(
                id=f"{cluster_key}/{namespace}/{name}",
                name=name,
                namespace=namespace,
                cluster_key=cluster_key,
                cluster=names[cluster_key],
                projects=tuple(p for p, _ in members),
                hostname=members[0][1],
                port=port,
                pod_security=levels[(cluster_key, namespace, port)],
                uid=uids[(cluster_key, namespace, port)],
            )
        )
    return targets


def sshd_config(*, restricted: bool = False) -> str:
    """The jump host's sshd: public keys only, TCP forwarding only, nothing else.

    ``restricted``: sshd runs as a non-root user, which cannot write /run/sshd.pid
    and for whom PAM does not work.
    """
    own = ["PidFile none", "UsePAM no"] if restricted else []
    return "\n".join(
        [
            *own,
            f"Port {SSHD_PORT}",
            f"HostKey {MOUNT}/{HOST_KEY_FILE}",
            f"AuthorizedKeysFile {MOUNT}/authorized_keys",
            # Secret volumes are kubelet-written and read-only; their directories
            # are not root-only, which StrictModes would refuse for no gain.
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowAgentForwarding no",
            "PermitTTY no",
            "X11Forwarding no",
            "PermitTunnel no",
            "GatewayPorts no",
            "AllowStreamLocalForwarding no",
            # ProxyJump (-W) and Berth's tunnels are local forwards; nobody may open
            # listeners on the jump pod with -R.
            "AllowTcpForwarding local",
            "ForceCommand /bin/false",  # no shell or command, even for a key without options
            "ClientAliveInterval 30",  # drop peers that vanished without a FIN
            "LogLevel INFO",
            "",
        ]
    )


def authorized_keys(member_keys: dict[str, str], berth_public_key: str) -> str:
    """One line per key, each restricted to port forwarding (``restrict`` = no pty,
    agent, X11 or rc), with the user's name as comment for the sshd log."""
    rows = [*sorted(member_keys.items()), ("berth-server", berth_public_key)]
    return "".join(f"restrict,port-forwarding {key} {owner}@berth\n" for owner, key in rows)


def jump_user(pod_security: Level, *, default: str) -> str:
    """Who logs in to the jump host: a non-root sshd logs in only its own user."""
    return RESTRICTED_SSH_USER if pod_security == "restricted" else default


def jump_objects(
    target: JumpHostTarget,
    *,
    image: str,
    keys: str,
    host_key: str,
    pod_security: Level = "privileged",
) -> JumpObjects:
    """The Secret, Service and Deployment of ``target``; pure, so tests read every field.

    ``pod_security``: the level in force (``restricted`` runs sshd as a non-root user).
    """
    labels = {kube.LABEL_MANAGED: kube.MANAGED_BY, LABEL_JUMP: target.name}
    restricted = pod_security == "restricted"
    config = sshd_config(restricted=restricted)
    host_public = ssh.public_key_text(host_key)
    # The pod restarts only when what sshd reads at start changes (never for keys).
    config_sha = sha(config + host_public)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": target.name, "labels": labels},
        "type": "Opaque",
        "data": {
            "authorized_keys": kube.secret_data(keys),
            HOST_KEY_FILE: kube.secret_data(host_key),
            HOST_KEY_PUB_FILE: kube.secret_data(host_public + "\n"),
            "sshd_config": kube.secret_data(config),
        },
    }
    port: dict[str, Any] = {"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}
    if target.port is not None:
        port["nodePort"] = target.port
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": target.name, "labels": labels},
        "spec": {"type": "NodePort", "selector": {LABEL_JUMP: target.name}, "ports": [port]},
    }
    container = {
        "name": "sshd",
        "image": image,
        "command": ["/bin/sh", "-c", _restricted_start() if restricted else _start()],
        "ports": [{"name": "ssh", "containerPort": SSHD_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "ssh"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "ssh"}, "periodSeconds": 10},
        # sshd forwarding a few hundred connections stays far below these.
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "keys", "mountPath": MOUNT, "readOnly": True}],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # a jump host needs no cluster rights
        "enableServiceLinks": False,
        "containers": [container],
        # 0400: sshd refuses a host key others can read. A non-root sshd must read
        # it too: 0444, which sshd accepts in a file it does not own (root's here).
        "volumes": [
            {
                "name": "keys",
                "secret": {
                    "secretName": target.name,
                    "defaultMode": 0o444 if restricted else 0o400,
                },
            }
        ],
    }
    if restricted:
        pod_spec = restrict_pod_spec(pod_spec, uid=target.uid)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {LABEL_JUMP: target.name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION_CONFIG: config_sha}},
                "spec": pod_spec,
            },
        },
    }
    return JumpObjects(secret=secret, service=service, deployment=deployment)


def _start() -> str:
    # Debian-based images need the privilege separation directory; Alpine ignores it.
    return f"mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f {MOUNT}/sshd_config"


def _restricted_start() -> str:
    """sshd as the pod's (non-root) user, who must be in /etc/passwd by name.

    Berth's jump image has /etc/passwd writable by group 0, which the pod runs
    in; with another image, the line says why logins will fail.
    """
    user = RESTRICTED_SSH_USER
    return (
        f'grep -q "^{user}:[^:]*:$(id -u):" /etc/passwd ||'
        f' echo "{user}:x:$(id -u):$(id -g):Berth jump host:/tmp:/bin/sh" >> /etc/passwd ||'
        f" echo 'berth: /etc/passwd is not writable: no {user} user, logins will fail' >&2;"
        f" exec /usr/sbin/sshd -D -e -f {MOUNT}/sshd_config"
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]  # 64 bits: a change detector
