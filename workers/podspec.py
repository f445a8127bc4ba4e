"""The Kubernetes objects of one job, as pure functions of the run and job.

Names are deterministic (``berth-<project>-<run>-<replica>-<rank>``), so a
second delivery of a provision task asks for the same objects and gets 409,
which :mod:`workers.provisioning` turns into "adopt". Every object carries
Berth's labels, which teardown and the reconcile sweep select on.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from shared import kube
from shared.configuration.fields import interpolate_env
from shared.configuration.groups import group_configuration, node_group_sizes
from shared.configuration.interpolation import (
    names_groups,
    node_ip_variable,
    with_node_ip_variables,
)
from shared.configuration.kube_fields import NodePool, PodSettings
from shared.kube.names import job_pod_name, object_name
from shared.placement import autoscaling
from shared.placement.requests import request_for
from shared.policy.pod_customisation import customise_pod
from shared.policy.pod_security import RESTRICTED_SSH_USER, Level, restrict_pod_spec
from shared.settings import LogSettings
from shared.ssh import (
    HOST_KEY_FILE,
    INIT_DONE_FILE,
    RUN_SSH_PORT,
)
from shared.state import secrets
from shared.state.records import Job, Run
from workers import code_volume, dind, service_probe, ssh_secret, supervisor

SSH_PORT = RUN_SSH_PORT
LABEL_GROUP = "berth.dev/group"
"""The job's node group or replica group, on its pod (when the configuration has groups)."""
SECRET_MOUNT = "/berth/secret"
# How run pods start sshd (after copying the keys out of the Secret, whose files
# are too open for sshd). Public so the SSH tests start their stand-in sshd alike.
RUN_SSHD_ARGS = (
    "-p",
    str(SSH_PORT),
    "-o",
    "PasswordAuthentication=no",
    "-o",
    "KbdInteractiveAuthentication=no",
    "-o",
    "PermitRootLogin=prohibit-password",
    # ~/.ssh/environment points sessions at the run's environment (_ssh_environment_lines).
    "-o",
    "PermitUserEnvironment=yes",
)
DEFAULT_SHELL = "/bin/sh"
SHM_MOUNT = "/dev/shm"
# Air-gapped SSH: an init container copies the ``ssh_init_image``'s /berth/ssh/ into
# this emptyDir, so a run image without sshd still gets one, and nothing is downloaded.
SSH_INIT_SOURCE = "/berth/ssh/."
TOOLS_MOUNT = "/berth/tools"
# Restricted pods run as a UID the image may not know, often with a read-only or
# root-owned home: HOME and sshd's runtime files go to emptyDirs, which the
# kubelet makes writable by any UID (restricted allows emptyDir volumes).
RESTRICTED_HOME = "/berth/home"
RUNTIME_DIR = "/run/berth"


@dataclass(frozen=True)
class JobObjects:
    pod: dict[str, Any]
    secret: dict[str, Any] | None
    """The job's own Secret: registry credentials and env values naming project
    secrets; None when it needs neither."""
    services: list[dict[str, Any]]
    """Headless service for multi-node DNS, and a ClusterIP service for ``type: service``."""
    ssh_secret: str | None = None
    """The name of the SSH Secret the pod mounts (``workers/ssh_secret.py``), which
    provisioning makes sure exists; None: the pod runs no sshd."""


@dataclass(frozen=True)
class ClaimMount:
    """A project volume resolved to its claim, for the pod's volumes."""

    claim: str
    read_only: bool = False
    """The volume itself is read-only (its configuration says so), whatever the mount asks."""


@dataclass(frozen=True)
class PodContext:
    """What the pod needs beyond the run: decided by the worker at provision time."""

    default_image: str
    master_ip: str | None = None
    """Rank 0's pod IP, known before any other rank is created."""
    ssh_public_keys: tuple[str, ...] = ()
    """Who may log in to the pod's sshd; its host key is in the project's SSH Secret
    for these keys (``workers/ssh_secret.py``)."""
    pod_settings: PodSettings | None = None
    """The backend's (and context's) pod customisation; None leaves the pod as Berth built it."""
    claims: Mapping[str, ClaimMount] = field(default_factory=dict)
    """Project volume name -> its claim, for every volume the run mounts."""
    allow_host_volumes: bool = False
    """Whether node directories may be mounted; optional ones are left out otherwise."""
    ssh_init_image: str | None = None
    """Copy sshd from this image in an init container (see SSH_INIT_SOURCE); None: the
    run image's own sshd."""
    node_pool: NodePool | None = None
    """Set when the job is placed on a pool node: the pod asks for the pool's labels."""
    pod_security: Level = "privileged"
    """The Pod Security level the pod must pass (``shared.policy.pod_security``)."""
    pod_uid: int | None = 1000
    """Under ``restricted``, the UID to run as when the pod settings name none; None:
    the cluster assigns one (OpenShift)."""
    code_parts: int = 0
    """Secrets holding the run's code archive (``workers/code_volume.py``); 0: no code."""
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Decrypted project secrets the configuration names (``shared/state/secrets.py``)."""
    scheduler_affinity: Mapping[str, Any] | None = None
    """For a job the kube-scheduler places (namespace-only mode,
    ``workers/scheduler_placement.py``): the pod's whole affinity, instead of a node."""
    devel_image: str | None = None
    """The image with the CUDA compiler that ``nvcc: true`` runs in (the settings')."""
    server_url: str | None = None
    """The API as pods reach it (``api.url_for_runs``): ``BERTH_URL`` for ``dstack: true``."""
    router_ip: str | None = None
    """A ``router: dynamo`` service's router pod address, for its workers' environment."""
    dind_image: str | None = None
    """The image with dockerd that ``docker: true`` runs in (the settings')."""
    output: supervisor.Keeping = field(default_factory=supervisor.Keeping)
    """How the container keeps its output, for the collector to put back what the
    kubelet never served (:func:`output_keeping`); none by default."""


OBJECT_KINDS = ("pod", "secret", "service")
"""The kinds of object :func:`build_job_objects` makes."""


def object_verbs(k: kube.Kube, kind: str) -> tuple[Any, Any, Any]:
    """The create, read and delete of a namespaced ``kind`` (of OBJECT_KINDS). The create
    takes the body as a dict (:meth:`shared.kube.Kube.post`), for :meth:`call_bytes`."""
    return {
        "pod": (
            partial(k.post, "pods"),
            k.core.read_namespaced_pod,
            k.core.delete_namespaced_pod,
        ),
        "secret": (
            partial(k.post, "secrets"),
            k.core.read_namespaced_secret,
            k.core.delete_namespaced_secret,
        ),
        "service": (
            partial(k.post, "services"),
            k.core.read_namespaced_service,
            k.core.delete_namespaced_service,
        ),
    }[kind]


def output_keeping(logs: LogSettings) -> supervisor.Keeping:
    """PodContext's output keeping from the settings: a copy up to the log store's cap
    per attempt in output bytes (stored lines also carry their timestamps, so an output
    near the cap is trimmed in the store and not recovered: the copy need not be bigger),
    and none without a hold (nothing would read it)."""
    return supervisor.Keeping(
        copy_bytes=int(logs.max_mib_per_attempt * 1024 * 1024) if logs.hold_s else 0,
        rotate_bytes=logs.node_log_max_bytes,
        hold_s=logs.hold_s,
    )


def run_has_services(run: Run, job: Job) -> bool:
    """Whether a run with this job has Services (a service's, or a multi-node run's
    headless one), as :func:`build_job_objects` makes them: teardown lists them only then."""
    return run.configuration_type == "service" or job.jobs_in_run > 1


def headless_service_name(run: Run) -> str:
    return object_name(run.project, run.name, "nodes")


def build_job_objects(run: Run, job: Job, conf: Any, ctx: PodContext) -> JobObjects:
    """Pod, Secret and Services for ``job``; pure, so tests can inspect every field."""
    if job.placement is None:
        raise ValueError(f"job {job.id} has no placement")
    conf = group_configuration(conf, job.group)  # the job's group's commands, image, ports
    name = job_pod_name(job)
    labels = kube.berth_labels(run.project, run.name, job.id) | {
        "berth.dev/replica": str(job.replica_num),
        "berth.dev/rank": str(job.job_num),
        kube.LABEL_ATTEMPT: str(job.attempt),
    }
    if job.group is not None:
        labels[LABEL_GROUP] = job.group  # group names are valid label values (dstack's rule)
    multinode = job.jobs_in_run > 1
    headless = headless_service_name(run)
    env = _env(run, job, conf, ctx, headless if multinode else None)
    # Values naming project secrets go into the job's Secret, never into the pod spec.
    secret_env = {
        k: secrets.interpolate(v, ctx.secret_values)
        for k, v in env.items()
        if secrets.referenced([v])
    }
    secret = _secret(run, job, conf, ctx, name, labels, secret_env)
    ssh = conf.type == "dev-environment" or bool(ctx.ssh_public_keys)
    ssh_name = ssh_secret.name_for(run.project, ctx.ssh_public_keys) if ssh else None
    pod_labels = dict(labels)
    if ssh:  # what the reaper reads to keep the SSH Secret while a pod names it
        pod_labels[ssh_secret.LABEL_SSH_KEYS] = ssh_secret.digest(run.project, ctx.ssh_public_keys)
    tools = ssh and ctx.ssh_init_image is not None
    restricted = ctx.pod_security == "restricted"
    if restricted:
        env.setdefault("HOME", RESTRICTED_HOME)
    script = _script(run, conf, multinode, ctx, ssh=ssh, tools=tools, restricted=restricted)
    env_vars = [_env_var(k, v, secret=name if k in secret_env else None) for k, v in env.items()]
    if ctx.output.holds:  # what PID 1 marks its end line with
        env_vars.append(
            {"name": "BERTH_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}
        )
    container: dict[str, Any] = {
        "name": "main",
        "image": run_image(conf, ctx),
        "command": [_shell(conf), "-c", script],
        "env": env_vars,
        "resources": _resources(job, conf),
        "ports": _ports(conf),
        "volumeMounts": [{"name": "shm", "mountPath": SHM_MOUNT}],
    }
    probe = service_probe.readiness_probe(conf)
    if probe is not None:
        container["readinessProbe"] = probe
    working_dir = code_volume.working_dir(conf)
    if working_dir:
        container["workingDir"] = working_dir
    docker = dind.uses_docker(conf)
    if getattr(conf, "privileged", False) or docker:  # dockerd needs it (dstack's rule too)
        container["securityContext"] = {"privileged": True}
    volumes: list[dict[str, Any]] = [{"name": "shm", "emptyDir": _shm(conf)}]
    docker_data = dind.data_volume(conf) if docker else None
    if docker_data is not None:
        volumes.append(docker_data)
        container["volumeMounts"].append({"name": docker_data["name"], "mountPath": dind.DATA_ROOT})
    if restricted:
        for volume, path in (("berth-home", RESTRICTED_HOME), ("berth-run", RUNTIME_DIR)):
            volumes.append({"name": volume, "emptyDir": {}})
            container["volumeMounts"].append({"name": volume, "mountPath": path})
    if ssh_name is not None:
        container["volumeMounts"].append(
            {"name": "berth", "mountPath": SECRET_MOUNT, "readOnly": True}
        )
        volumes.append(
            {
                "name": "berth",
                "secret": {
                    "secretName": ssh_name,
                    # The host key's public half is the client's, not the pod's.
                    "items": [{"key": k, "path": k} for k in ("authorized_keys", HOST_KEY_FILE)],
                },
            }
        )
    volumes += _mount_volumes(container, conf, ctx, rank=job.job_num)
    if ctx.code_parts:
        volumes.append(code_volume.volume(run, ctx.code_parts))
        container["volumeMounts"].append(
            {"name": "berth-code", "mountPath": code_volume.CODE_MOUNT, "readOnly": True}
        )
    init_containers = []
    if tools:
        assert ctx.ssh_init_image is not None
        init_containers.append(_ssh_init_container(ctx.ssh_init_image, restricted=restricted))
        volumes.append({"name": "berth-tools", "emptyDir": {}})
        container["volumeMounts"].append(
            {"name": "berth-tools", "mountPath": TOOLS_MOUNT, "readOnly": True}
        )
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # run code gets no cluster credentials
        "enableServiceLinks": False,  # thousands of services must not flood the env
        "containers": [container],
        "volumes": volumes,
        "tolerations": _tolerations(job),
        "affinity": (
            dict(ctx.scheduler_affinity)
            if ctx.scheduler_affinity is not None
            else _affinity(job.placement.node, ctx.node_pool)
        ),
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if multinode:
        spec["hostname"] = f"node-{job.job_num}"
        spec["subdomain"] = headless
    if secret is not None and ".dockerconfigjson" in secret["data"]:
        spec["imagePullSecrets"] = [{"name": name}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": pod_labels},
        "spec": spec,
    }
    if ctx.pod_settings is not None:
        # Applied last, and unable to touch Berth's labels or the affinity above.
        pod = customise_pod(pod, ctx.pod_settings, tags=getattr(conf, "tags", None) or {})
    if restricted:
        pod["spec"] = restrict_pod_spec(pod["spec"], uid=ctx.pod_uid)
    if binds_itself(pod["spec"], job, ctx):
        # Berth chose the node: binding it here saves the kube-scheduler's binding and
        # event writes and its queue. The affinity stays, and the kubelet checks it.
        pod["spec"]["nodeName"] = job.placement.node
    services = []
    if multinode:
        services.append(_headless_service(run, headless))
    if conf.type == "service":
        services.append(_service(run, conf))
    return JobObjects(pod=pod, secret=secret, services=services, ssh_secret=ssh_name)


def binds_itself(spec: Mapping[str, Any], job: Job, ctx: PodContext) -> bool:
    """Whether Berth binds the pod to its chosen node itself (``spec.nodeName``).

    Not when the kube-scheduler must choose or check: a job it places (namespace-only
    mode), a node an autoscaler has yet to make, claims (a WaitForFirstConsumer volume
    is bound to the node the scheduler picks), a runtime class or a scheduler named by
    the operator, or a job a kubelet has refused before (``Job.scheduler_binds``).
    """
    assert job.placement is not None
    if ctx.scheduler_affinity is not None or job.scheduler_binds:
        return False
    if ctx.node_pool is not None and autoscaling.is_pool_node(job.placement.node):
        return False
    if spec.get("runtimeClassName") or spec.get("schedulerName"):
        return False
    volumes = spec.get("volumes") or ()
    return not any("persistentVolumeClaim" in v or "ephemeral" in v for v in volumes)


def run_image(conf: Any, ctx: PodContext) -> str:
    """The run's own image, else the dind image for ``docker`` or the CUDA devel image
    for ``nvcc``, else the default."""
    if dind.uses_docker(conf):
        if ctx.dind_image is None:
            # Submission refuses this (shared.settings dind_image); a setting removed since.
            raise ValueError("docker: true needs the server's dind_image setting")
        return ctx.dind_image
    image = getattr(conf, "image", None)
    if image:
        return str(image)
    if getattr(conf, "nvcc", False):
        if ctx.devel_image is None:
            # Submission refuses this (shared.settings devel_image); a setting removed since.
            raise ValueError("nvcc: true needs the server's devel_image setting")
        return ctx.devel_image
    return ctx.default_image


def _env(run: Run, job: Job, conf: Any, ctx: PodContext, headless: str | None) -> dict[str, str]:
    assert job.placement is not None
    # A bare name (``- HF_TOKEN``) has no value here: the CLI fills it from the
    # submitter's environment; one still empty is left out rather than set to "None".
    env = {str(k): str(v) for k, v in (getattr(conf, "env", None) or {}).items() if v is not None}
    gpus = job.placement.gpus
    env |= {
        "DSTACK_RUN_NAME": run.name,
        "DSTACK_NODES_NUM": str(job.jobs_in_run),
        "DSTACK_NODE_RANK": str(job.job_num),
        "DSTACK_GPUS_PER_NODE": str(gpus),
        "DSTACK_GPUS_NUM": str(gpus * job.jobs_in_run),
        "DSTACK_REPLICA_NUM": str(job.replica_num),
    }
    if ctx.router_ip is not None:
        env["DSTACK_ROUTER_INTERNAL_IP"] = ctx.router_ip
    if getattr(conf, "dstack", False) and ctx.server_url:
        env |= {"BERTH_URL": ctx.server_url, "BERTH_PROJECT": run.project}
    if headless is not None:
        hosts = [f"node-{i}.{headless}" for i in range(job.jobs_in_run)]
        env["BERTH_NODES_HOSTNAMES"] = "\n".join(hosts)
        env["DSTACK_MASTER_NODE_IP"] = ctx.master_ip or ""
    else:
        env["DSTACK_MASTER_NODE_IP"] = "127.0.0.1"
        env["DSTACK_NODES_IPS"] = "127.0.0.1"
        if conf.type == "task" and any(names_groups(c) for c in conf.commands):
            env[node_ip_variable(0)] = "127.0.0.1"  # groups[0].nodes[0]: the node itself
    return env


def _script(
    run: Run,
    conf: Any,
    multinode: bool,
    ctx: PodContext,
    *,
    ssh: bool,
    tools: bool = False,
    restricted: bool = False,
) -> str:
    lines = list(code_volume.unpack_lines(conf))
    if ssh:
        lines += _restricted_sshd_lines(tools=tools) if restricted else _sshd_lines(tools=tools)
    if multinode:
        # Pod IPs exist only once every pod runs: resolve the peers' stable DNS
        # names from the headless service (bounded wait) into DSTACK_NODES_IPS.
        # Each rank's IP is also BERTH_NODE_<rank>_IP, which a node group's
        # ${{ groups[i].nodes[j].IP_ADDRESS }} became (shared.configuration.interpolation).
        lines += [
            "DSTACK_NODES_IPS=''",
            "berth_rank=0",
            "for h in $BERTH_NODES_HOSTNAMES; do i=0",
            '  until ip=$(getent hosts "$h" | cut -d" " -f1) && [ -n "$ip" ]; do',
            '    i=$((i+1)); [ $i -gt 300 ] && { echo "peer $h unresolvable" >&2; exit 1; }',
            "    sleep 1; done",
            '  export "BERTH_NODE_${berth_rank}_IP=$ip"; berth_rank=$((berth_rank+1))',
            '  DSTACK_NODES_IPS="$DSTACK_NODES_IPS$ip',
            '"; done',
            "export DSTACK_NODES_IPS",
            # Rank 0 is created before its own IP is known: the master is the first peer.
            '[ -n "$DSTACK_MASTER_NODE_IP" ] ||'
            ' DSTACK_MASTER_NODE_IP=$(echo "$DSTACK_NODES_IPS" | head -n 1)',
            "export DSTACK_MASTER_NODE_IP",
        ]
    if ssh:
        lines += _ssh_environment_lines()
    if dind.uses_docker(conf):
        lines += dind.start_lines()  # before init or the commands, as dstack's start-dockerd
    if conf.type == "dev-environment":
        body = list(getattr(conf, "init", None) or [])
        # `berth apply` prints the IDE link once this exists: init has finished.
        body += [f": > {INIT_DONE_FILE}", "sleep infinity"]
    elif getattr(conf, "entrypoint", None):
        # dstack's Docker-like form: the entrypoint's words, then each command as one
        # more argument (``entrypoint: bash -c`` runs the first command as a script).
        argv = shlex.split(conf.entrypoint) + list(getattr(conf, "commands", None) or [])
        body = [shlex.join(argv)]
    else:
        body = list(getattr(conf, "commands", None) or [])
        if conf.type == "task":
            sizes = node_group_sizes(conf)
            body = [with_node_ip_variables(command, sizes) for command in body]
    return supervisor.script(lines, body, keeping=ctx.output)


def _sshd_lines(*, tools: bool = False) -> list[str]:
    """Start sshd for ``berth attach`` in every run type, as dstack does.

    A missing sshd or a read-only home only turns SSH off, with a line in the
    log: the run itself must not fail over it (``set -e`` does not reach inside
    a function called in an ``||`` list). With ``tools``, the image's own sshd
    still comes first and the one the init container copied is the fallback.
    """
    key = f"/run/berth/{HOST_KEY_FILE}"
    if tools:
        # The kit's sshd brings its own config: an image without OpenSSH has no
        # /etc/ssh/sshd_config, nor the privilege-separation user sshd insists on.
        return [
            "berth_sshd() {",
            "  if sshd=$(command -v sshd); then conf=''; else",
            f"    sshd={TOOLS_MOUNT}/sshd; conf='-f {TOOLS_MOUNT}/sshd_config'",
            "    grep -q '^sshd:' /etc/passwd ||",
            "      echo 'sshd:x:74:65534:sshd privsep:/run/sshd:/bin/false' >> /etc/passwd",
            "  fi",
            "  [ -x \"$sshd\" ] || { echo 'berth: no sshd in the image or tools' >&2; return 1; }",
            "  mkdir -p ~/.ssh /run/sshd /run/berth && chmod 700 ~/.ssh &&",
            f"  cp {SECRET_MOUNT}/authorized_keys ~/.ssh/authorized_keys &&",
            "  chmod 600 ~/.ssh/authorized_keys &&",
            f"  cp {SECRET_MOUNT}/{HOST_KEY_FILE} {key} && chmod 600 {key} &&",
            f'  "$sshd" $conf -h {key} {shlex.join(RUN_SSHD_ARGS)}',
            "}",
            "berth_sshd || echo 'berth: sshd did not start; ssh access is off' >&2",
        ]
    return [
        "berth_sshd() {",
        "  command -v sshd >/dev/null || { echo 'berth: no sshd in this image' >&2; return 1; }",
        "  mkdir -p ~/.ssh /run/sshd /run/berth && chmod 700 ~/.ssh &&",
        f"  cp {SECRET_MOUNT}/authorized_keys ~/.ssh/authorized_keys &&",
        "  chmod 600 ~/.ssh/authorized_keys &&",
        f"  cp {SECRET_MOUNT}/{HOST_KEY_FILE} {key} && chmod 600 {key} &&",
        f'  "$(command -v sshd)" -h {key} {shlex.join(RUN_SSHD_ARGS)}',
        "}",
        "berth_sshd || echo 'berth: sshd did not start; ssh access is off' >&2",
    ]


def _restricted_sshd_lines(*, tools: bool) -> list[str]:
    """sshd as the container's own (non-root, maybe arbitrary) user, on RUN_SSH_PORT.

    A non-root sshd needs no privilege-separation user or directory, but it can
    only log in the user it runs as, and finds that user by name in /etc/passwd:
    a UID the image does not know gets a ``berth`` line appended, which works
    where /etc/passwd is writable by the pod's group (GID 0 in Berth's images,
    as OpenShift's images do it); elsewhere SSH is off with a line saying why.
    No PAM (it needs root); StrictModes off, since HOME and the runtime directory
    are emptyDirs (mode 0777) that only this pod's one user can reach.
    """
    key = f"{RUNTIME_DIR}/{HOST_KEY_FILE}"
    user = RESTRICTED_SSH_USER
    if tools:
        find = [
            "  if sshd=$(command -v sshd); then conf=''; else",
            f"    sshd={TOOLS_MOUNT}/sshd; conf='-f {TOOLS_MOUNT}/sshd_config'; fi",
        ]
    else:
        find = ["  sshd=$(command -v sshd) || sshd=''; conf=''"]
    options = ("-o", "UsePAM=no", "-o", "StrictModes=no", "-o", f"PidFile={RUNTIME_DIR}/sshd.pid")
    return [
        "berth_sshd() {",
        *find,
        "  [ -x \"$sshd\" ] || { echo 'berth: no sshd in this image' >&2; return 1; }",
        f'  grep -q "^{user}:[^:]*:$(id -u):" /etc/passwd ||',
        f'    echo "{user}:x:$(id -u):$(id -g):Berth:$HOME:$(command -v bash || echo /bin/sh)"'
        " >> /etc/passwd || {",
        f"    echo 'berth: /etc/passwd is not writable and has no {user} user for this UID'"
        " >&2; return 1; }",
        f"  mkdir -p ~/.ssh {RUNTIME_DIR} && chmod 700 ~/.ssh &&",
        f"  cp {SECRET_MOUNT}/authorized_keys ~/.ssh/authorized_keys &&",
        "  chmod 600 ~/.ssh/authorized_keys &&",
        f"  cp {SECRET_MOUNT}/{HOST_KEY_FILE} {key} && chmod 600 {key} &&",
        f'  "$sshd" $conf -h {key} {shlex.join(RUN_SSHD_ARGS + options)}',
        "}",
        "berth_sshd || echo 'berth: sshd did not start; ssh access is off' >&2",
    ]


def _ssh_environment_lines() -> list[str]:
    """SSH sessions get the run's environment (DSTACK_*, NVIDIA_VISIBLE_DEVICES, env).

    sshd starts every session with a fresh environment, so ``ssh RUN 'echo
    $DSTACK_NODE_RANK'`` would print nothing. The environment is saved as a
    sourceable file (``export -p`` quotes multi-line values such as
    DSTACK_NODES_IPS) and sshd points bash at it: ``BASH_ENV`` for commands,
    ``ENV`` for POSIX shells, and ``~/.bashrc`` for interactive logins.
    """
    env_file = "/run/berth/env.sh"
    return [
        "mkdir -p /run/berth || true",
        f"export -p | grep -v -E '^export (PWD|OLDPWD|SHLVL|_)=' > {env_file} || true",
        "mkdir -p ~/.ssh &&"
        f" printf 'BASH_ENV={env_file}\\nENV={env_file}\\n' > ~/.ssh/environment || true",
        f"grep -qs '{env_file}' ~/.bashrc ||"
        f" echo '[ -f {env_file} ] && . {env_file}' >> ~/.bashrc || true",
    ]


def _shell(conf: Any) -> str:
    shell = getattr(conf, "shell", None)
    if not shell:
        return DEFAULT_SHELL
    return shell if shell.startswith("/") else f"/bin/{shell}"


def _resources(job: Job, conf: Any) -> dict[str, Any]:
    assert job.placement is not None
    p = job.placement
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if p.cpu_milli:
        requests["cpu"] = f"{p.cpu_milli}m"
    if p.memory_bytes:
        requests["memory"] = str(p.memory_bytes)
    # Placements written before disk was reserved carry 0: the configuration decides.
    disk = p.disk_bytes or request_for(conf).disk_bytes
    if disk:
        requests["ephemeral-storage"] = str(disk)  # only when the configuration sets disk
    if p.gpu_resource and p.gpus:
        # Extended resources must have requests == limits.
        requests[p.gpu_resource] = limits[p.gpu_resource] = str(p.gpus)
    memory = getattr(getattr(conf, "resources", None), "memory", None)
    if memory is not None and memory.max is not None:
        # A memory range with an upper bound (``memory: 16GB`` or ``..16GB``) is a
        # ceiling the user chose: the pod is held to it, and a process that goes past
        # it is OOM-killed and reported so, instead of starving its neighbours.
        limits["memory"] = str(int(float(memory.max) * 2**30))
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def _ports(conf: Any) -> list[dict[str, Any]]:
    ports: list[int] = []
    if conf.type == "service":
        ports.append(_service_port(conf))
    if conf.type == "dev-environment":
        ports.append(SSH_PORT)
    for p in getattr(conf, "ports", None) or []:
        ports.append(int(getattr(p, "container_port", p)))
    seen: list[int] = []
    for p in ports:
        if p not in seen:
            seen.append(p)
    return [{"containerPort": p, "name": f"p{p}"[:15], "protocol": "TCP"} for p in seen]


def _service_port(conf: Any) -> int:
    port = conf.port
    return int(getattr(port, "container_port", port))


def _shm(conf: Any) -> dict[str, Any]:
    resources = getattr(conf, "resources", None)
    shm = getattr(resources, "shm_size", None) if resources is not None else None
    size = _bytes(shm)
    return {"medium": "Memory", "sizeLimit": str(size)} if size else {"medium": "Memory"}


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value * 2**30)  # memory sizes are GB in dstack's grammar
    gb = getattr(value, "gb", None) or getattr(value, "min", None)
    return int(float(gb) * 2**30) if gb is not None else None


def _affinity(node: str, pool: NodePool | None) -> dict[str, Any]:
    """Pin the pod to Berth's chosen node, or to any node of the pool it waits for."""
    if pool is not None and autoscaling.is_pool_node(node):
        return autoscaling.pool_affinity(pool)
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _mount_volumes(
    container: dict[str, Any], conf: Any, ctx: PodContext, *, rank: int
) -> list[dict[str, Any]]:
    """Project volumes as their claims, node directories as hostPath (where allowed).

    A name with ``${{ dstack.node_rank }}`` is the node's own volume (``rank`` filled in).
    """
    volumes: list[dict[str, Any]] = []
    for index, mount in enumerate(getattr(conf, "volumes", None) or []):
        if mount.is_instance:
            if not ctx.allow_host_volumes:
                if mount.optional:
                    continue  # dstack's meaning: run without it where hostPath is off
                raise ValueError(f"instance volume {mount.instance_path} is not allowed here")
            name = f"host-{index}"
            source: dict[str, Any] = {
                "hostPath": {"path": mount.instance_path, "type": "DirectoryOrCreate"}
            }
            read_only = bool(mount.read_only)
        else:
            volume = mount.name_for(rank)
            claim = ctx.claims.get(volume) if volume is not None else None
            if claim is None:
                raise ValueError(f"volume {volume} was not resolved to a claim")
            name = f"vol-{index}"
            read_only = bool(mount.read_only or claim.read_only)
            source = {"persistentVolumeClaim": {"claimName": claim.claim, "readOnly": read_only}}
        volumes.append({"name": name, **source})
        mount_spec: dict[str, Any] = {"name": name, "mountPath": mount.path}
        if read_only:
            mount_spec["readOnly"] = True
        container["volumeMounts"].append(mount_spec)
    return volumes


def _ssh_init_container(image: str, *, restricted: bool) -> dict[str, Any]:
    # Exec form: the init image needs `cp`, not a shell; it copies, it downloads nothing.
    # A non-root `cp -a` fails on the emptyDir's own root-owned directory (it would
    # set its mode and owner); `-R` keeps the files' modes (less the umask) all the same.
    flags = "-R" if restricted else "-a"
    return {
        "name": "berth-sshd",
        "image": image,
        "command": ["cp", flags, SSH_INIT_SOURCE, TOOLS_MOUNT + "/"],
        "volumeMounts": [{"name": "berth-tools", "mountPath": TOOLS_MOUNT}],
    }


def _tolerations(job: Job) -> list[dict[str, str]]:
    assert job.placement is not None
    resource = job.placement.gpu_resource
    if not resource:
        return []
    key = "nvidia.com/gpu" if resource.startswith("nvidia.com/") else resource
    return [{"key": key, "operator": "Exists", "effect": "NoSchedule"}]


def _env_var(key: str, value: str, *, secret: str | None) -> dict[str, Any]:
    if secret is None:
        return {"name": key, "value": value}
    ref = {"name": secret, "key": f"{_ENV_SECRET_PREFIX}{key}"}
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


_ENV_SECRET_PREFIX = "env-"  # Secret keys of env values that name project secrets


def _secret(
    run: Run,
    job: Job,
    conf: Any,
    ctx: PodContext,
    name: str,
    labels: dict[str, str],
    secret_env: Mapping[str, str],
) -> dict[str, Any] | None:
    data: dict[str, str] = {
        f"{_ENV_SECRET_PREFIX}{k}": kube.secret_data(v) for k, v in secret_env.items()
    }
    auth = getattr(conf, "registry_auth", None)
    if auth is not None:
        image = run_image(conf, ctx)
        env = getattr(conf, "env", None) or {}
        # ${{ env.NAME }} first: an env value may itself name a project secret.
        username = secrets.interpolate(interpolate_env(auth.username, env), ctx.secret_values)
        password = secrets.interpolate(
            interpolate_env(_plain(auth.password), env), ctx.secret_values
        )
        data[".dockerconfigjson"] = kube.secret_data(_docker_config(image, username, password))
    if not data:
        return None
    kind = "kubernetes.io/dockerconfigjson" if ".dockerconfigjson" in data else "Opaque"
    if kind != "Opaque" and len(data) > 1:
        kind = "Opaque"  # one secret for both; pull secrets only need the key
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": kind,
        "data": data,
    }


def _docker_config(image: str, username: str, password: str) -> str:
    first = image.split("/", 1)[0]
    registry = (
        first if ("." in first or ":" in first) and "/" in image else "https://index.docker.io/v1/"
    )
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {registry: {"username": username, "password": password, "auth": token}}}
    )


def _plain(secret: Any) -> str:
    get = getattr(secret, "get_secret_value", None)
    return str(get() if get else secret)


def _headless_service(run: Run, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": kube.berth_labels(run.project, run.name)},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # peers resolve each other while starting
            "selector": {kube.LABEL_PROJECT: run.project, kube.LABEL_RUN: run.name},
        },
    }


def _service(run: Run, conf: Any) -> dict[str, Any]:
    port = _service_port(conf)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": object_name(run.project, run.name),
            "labels": kube.berth_labels(run.project, run.name),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {kube.LABEL_PROJECT: run.project, kube.LABEL_RUN: run.name},
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
