"""The Pod Security Standards' ``restricted`` profile, as a checker for pod specs in tests.

Written from the standard itself, control by control, and independent of
Berth's own code (``shared.policy.pod_security``), so a test that passes here says
the pod passes the standard, not that Berth agrees with itself.
Source: https://kubernetes.io/docs/concepts/security/pod-security-standards/
(Kubernetes v1.36; ``restricted`` includes every ``baseline`` control).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Baseline "Capabilities": what containers may add.
_BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
# Baseline "Sysctls": the safe set.
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# Restricted "Volume Types": the only volume sources allowed.
_RESTRICTED_VOLUMES = frozenset(
    {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
        "projected", "secret",
    }
)  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every way ``pod`` (a Pod, or a pod template with ``metadata``/``spec``) breaks
    ``restricted``; empty when it passes."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    psc = spec.get("securityContext") or {}
    out: list[str] = []
    containers = list(_containers(spec))

    # --- baseline ---
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"Host Namespaces: spec.{key}")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"HostPath Volumes: volume {volume['name']}")
    for key, value in (meta.get("annotations") or {}).items():
        allowed = value == "runtime/default" or value.startswith("localhost/")
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not allowed:
            out.append(f"AppArmor: annotation {key}={value}")
    out += _apparmor_selinux_seccomp("spec.securityContext", psc)
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            out.append(f"Sysctls: {sysctl.get('name')}")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"HostProcess: {where}")
        if sc.get("privileged"):
            out.append(f"Privileged Containers: {where}.securityContext.privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - _BASELINE_CAPABILITIES:
            out.append(f"Capabilities (baseline): {where} adds {sorted(added)}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"Host Ports: {where} hostPort {port['hostPort']}")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"/proc Mount Type: {where}")
        out += _apparmor_selinux_seccomp(f"{where}.securityContext", sc)

    # --- restricted ---
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= _RESTRICTED_VOLUMES:
            out.append(f"Volume Types: volume {volume['name']} is {sorted(sources)}")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in _PROFILE_TYPES
    if psc.get("runAsUser") == 0:
        out.append("Running as Non-root user: spec.securityContext.runAsUser is 0")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: {where}.securityContext.allowPrivilegeEscalation")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"Running as Non-root: {where} (nor set on the pod)")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {where}.securityContext.runAsUser is 0")
        profile = (sc.get("seccompProfile") or {}).get("type")
        if profile is None and not pod_seccomp:
            out.append(f"Seccomp (restricted): {where} has no profile (nor the pod)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities (restricted): {where} does not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"Capabilities (restricted): {where} adds {caps.get('add')}")
    return out


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(spec.get(field) or []):
            yield f"spec.{field}[{index}]", container


def _apparmor_selinux_seccomp(where: str, context: dict[str, Any]) -> list[str]:
    out = []
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, *_PROFILE_TYPES):
        out.append(f"AppArmor: {where}.appArmorProfile.type={apparmor}")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES:
        out.append(f"SELinux: {where}.seLinuxOptions.type")
    if selinux.get("user") or selinux.get("role"):
        out.append(f"SELinux: {where}.seLinuxOptions user/role")
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp not in (None, *_PROFILE_TYPES):
        out.append(f"Seccomp: {where}.seccompProfile.type={seccomp}")
    return out
