"""Under ``pod_security: restricted`` every pod Berth builds passes the standard.

Pure: the specs of run pods (task, dev environment, service, both ranks of a
multi-node task, with the sshd init container and a volume claim) and of the
jump host, checked against ``tests.pod_security_standard``, which is written
from the Pod Security Standards document, not from Berth's code.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shared.configuration import configuration_from_mapping
from shared.configuration.kube_fields import PodSecurityContext, PodSettings
from shared.configuration.server import server_config_from_text
from shared.errors import ConfigError
from shared.policy import pod_security
from shared.ssh import new_host_key
from shared.state.records import Job, Placement, Run
from tests.pod_security_standard import restricted_violations
from workers.jumphost_objects import JumpHostTarget, jump_objects, jump_user
from workers.podspec import RESTRICTED_HOME, ClaimMount, PodContext, build_job_objects

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "task": {"type": "task", "commands": ["python3 train.py"]},
    "dev-environment": {"type": "dev-environment", "ide": "vscode", "init": ["echo hi"]},
    "service": {"type": "service", "port": 8000, "commands": ["serve"], "replicas": 2},
    "task with ports": {"type": "task", "commands": ["x"], "ports": [8080]},
    "volume": {"type": "task", "commands": ["ls /data"], "volumes": ["team:/data"]},
    "optional node directory": {
        "type": "task",
        "commands": ["x"],
        "volumes": [{"instance_path": "/mnt/cache", "path": "/cache", "optional": True}],
    },
}
HOST_KEY = new_host_key()
JUMP = JumpHostTarget(
    id="c/ns/berth-jump-30022",
    name="berth-jump-30022",
    namespace="ns",
    cluster_key="c",
    projects=("main",),
    hostname="127.0.0.1",
    port=30022,
)


def _pod(
    conf_data: dict[str, Any],
    *,
    level: pod_security.Level = "restricted",
    job_num: int = 0,
    **ctx: Any,
) -> dict[str, Any]:
    conf = configuration_from_mapping({"name": "locked", **conf_data})
    run = Run(
        id="r1",
        project="main",
        name="locked",
        user="admin",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
        pod_security=level,
    )
    job = Job(
        id=f"j{job_num}",
        run_id="r1",
        project="main",
        run_name="locked",
        job_num=job_num,
        jobs_in_run=int(conf_data.get("nodes", 1)),
        placement=Placement(node="n1", gpu_resource="nvidia.com/gpu", gpus=1),
    )
    context = PodContext(
        default_image="berth.local/run:x",
        master_ip="10.244.0.5" if job_num else None,
        ssh_public_keys=("ssh-ed25519 AAAA user",),
        claims={"team": ClaimMount(claim="team-data")},
        pod_security=level,
        **ctx,
    )
    pod: dict[str, Any] = build_job_objects(run, job, conf, context).pod
    return pod


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_run_pod_passes_the_restricted_standard(name: str) -> None:
    assert restricted_violations(_pod(CONFIGURATIONS[name])) == []


@pytest.mark.parametrize("rank", [0, 1])
def test_both_ranks_of_a_multi_node_task_pass_the_restricted_standard(rank: int) -> None:
    pod = _pod({"type": "task", "commands": ["torchrun"], "nodes": 2}, job_num=rank)
    assert restricted_violations(pod) == []


def test_the_sshd_init_container_passes_the_restricted_standard_too() -> None:
    pod = _pod(CONFIGURATIONS["dev-environment"], ssh_init_image="berth.local/sshd-init:x")
    assert pod["spec"]["initContainers"]
    assert restricted_violations(pod) == []


def test_operator_pod_settings_do_not_undo_the_restricted_fields() -> None:
    settings = PodSettings(
        security_context=PodSecurityContext(fsGroup=2000, seccompProfile={"type": "Unconfined"}),
        service_account_name="runner",
    )
    pod = _pod(CONFIGURATIONS["task"], pod_settings=settings)
    assert restricted_violations(pod) == []
    assert pod["spec"]["securityContext"]["fsGroup"] == 2000


def test_the_checker_finds_today_s_pods_break_restricted() -> None:
    """The negative control: the same pods at ``privileged`` fail the checks."""
    found = restricted_violations(_pod(CONFIGURATIONS["dev-environment"], level="privileged"))
    assert any(v.startswith("Privilege Escalation") for v in found)
    assert any(v.startswith("Running as Non-root") for v in found)
    assert any(v.startswith("Seccomp") for v in found)
    assert any(v.startswith("Capabilities (restricted)") for v in found)


def test_a_restricted_pod_runs_as_uid_1000_in_group_0_with_a_writable_home() -> None:
    pod = _pod(CONFIGURATIONS["dev-environment"])
    context = pod["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (1000, 0)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HOME"] == RESTRICTED_HOME
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts[RESTRICTED_HOME]]["emptyDir"] == {}
    assert volumes[mounts["/run/berth"]]["emptyDir"] == {}


def test_without_a_uid_the_cluster_assigns_one_as_openshift_does() -> None:
    pod = _pod(CONFIGURATIONS["task"], pod_uid=None)
    assert "runAsUser" not in pod["spec"]["securityContext"]
    assert restricted_violations(pod) == []


def test_a_restricted_run_pod_s_sshd_runs_without_pam_on_the_unprivileged_port() -> None:
    script = _pod(CONFIGURATIONS["dev-environment"])["spec"]["containers"][0]["command"][-1]
    assert "-p 10022" in script
    assert "UsePAM=no" in script
    assert "StrictModes=no" in script
    assert "/run/sshd" not in script  # no privilege separation directory as non-root
    assert '"berth:x:$(id -u):$(id -g):Berth:$HOME:' in script


def test_a_run_pod_at_privileged_is_built_as_before() -> None:
    pod = _pod(CONFIGURATIONS["dev-environment"], level="privileged")
    assert "securityContext" not in pod["spec"]
    assert "HOME" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_the_restricted_jump_host_passes_the_restricted_standard() -> None:
    objects = jump_objects(
        JUMP, image="berth.local/jump:x", keys="k\n", host_key=HOST_KEY, pod_security="restricted"
    )
    template = objects.deployment["spec"]["template"]
    assert restricted_violations(template) == []
    assert template["spec"]["volumes"][0]["secret"]["defaultMode"] == 0o444
    config = base64.b64decode(objects.secret["data"]["sshd_config"]).decode()
    assert "UsePAM no" in config and "PidFile none" in config
    command = template["spec"]["containers"][0]["command"][-1]
    assert "berth:x:$(id -u)" in command and "/run/sshd" not in command
    assert jump_user("restricted", default="root") == "berth"


def test_the_jump_host_at_privileged_is_built_as_before() -> None:
    objects = jump_objects(JUMP, image="img", keys="k\n", host_key=HOST_KEY)
    template = objects.deployment["spec"]["template"]
    assert restricted_violations(template) != []
    assert template["spec"]["volumes"][0]["secret"]["defaultMode"] == 0o400
    assert jump_user("privileged", default="root") == "root"


def _refused(conf_data: dict[str, Any], level: pod_security.Level) -> dict[str, str]:
    conf = configuration_from_mapping({"name": "refused", **conf_data})
    return {str(e.field): e.message for e in pod_security.refusals(conf, level)}


def test_restricted_refuses_a_privileged_run_naming_the_field() -> None:
    refused = _refused({"type": "task", "commands": ["x"], "privileged": True}, "restricted")
    assert "privileged" in refused and "restricted" in refused["privileged"]


def test_restricted_and_baseline_refuse_node_directories_but_not_optional_ones() -> None:
    mandatory = {"type": "task", "commands": ["x"], "volumes": ["/mnt/data:/data"]}
    assert "/mnt/data" in _refused(mandatory, "restricted")["volumes"]
    assert "volumes" in _refused(mandatory, "baseline")
    assert _refused(CONFIGURATIONS["optional node directory"], "restricted") == {}


def test_restricted_refuses_a_port_below_1024_that_a_non_root_process_cannot_bind() -> None:
    assert "port" in _refused({"type": "service", "port": 80, "commands": ["x"]}, "restricted")
    assert "ports" in _refused({"type": "task", "commands": ["x"], "ports": [443]}, "restricted")
    assert _refused({"type": "service", "port": 80, "commands": ["x"]}, "baseline") == {}


def test_privileged_refuses_nothing() -> None:
    conf = {"type": "task", "commands": ["x"], "privileged": True, "volumes": ["/a:/b"]}
    assert _refused(conf, "privileged") == {}


def test_the_stricter_level_wins() -> None:
    assert pod_security.stricter("privileged", "restricted") == "restricted"
    assert pod_security.stricter("restricted", "baseline") == "restricted"
    assert pod_security.stricter("baseline", "privileged") == "baseline"


_SERVER = """
projects:
- name: main
  backends:
  - type: kubernetes
    kubeconfig: {{filename: ~/.kube/config}}
{extra}
"""


def test_pod_security_defaults_to_today_s_pods() -> None:
    backend = server_config_from_text(_SERVER.format(extra="")).backend_for("main")
    assert (backend.pod_security, backend.pod_security_uid) == ("privileged", 1000)


def test_host_volumes_cannot_be_allowed_under_restricted() -> None:
    extra = "    pod_security: restricted\n    allow_host_volumes: true"
    with pytest.raises(ConfigError) as e:
        server_config_from_text(_SERVER.format(extra=extra))
    assert "allow_host_volumes" in str(e.value) and "hostPath" in str(e.value)


def test_a_root_uid_cannot_be_set_under_restricted() -> None:
    extra = "    pod_security: restricted\n    pod: {security_context: {runAsUser: 0}}"
    with pytest.raises(ConfigError) as e:
        server_config_from_text(_SERVER.format(extra=extra))
    assert "runAsUser" in str(e.value)
