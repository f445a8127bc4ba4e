"""The pod Berth generates never asks for more than the run needs from the node.

Pure: :func:`workers.podspec.build_job_objects` for every run type and option
that touches the pod. No service-account token, no host network, PID, IPC or
path, and ``privileged`` only when the configuration asks (the API refuses
that unless the project allows it: see test_security).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.configuration import configuration_from_mapping
from shared.state.records import Job, Placement, Run
from workers.podspec import PodContext, build_job_objects

CONFIGURATIONS = [
    {"type": "task", "commands": ["train"]},
    {"type": "task", "commands": ["train"], "nodes": 2, "resources": {"gpu": "H100:8"}},
    {"type": "task", "commands": ["x"], "privileged": True},
    {
        "type": "task",
        "commands": ["x"],
        "image": "registry.example.com/a/b:1",
        "registry_auth": {"username": "u", "password": "p"},
    },
    {"type": "dev-environment", "ide": "vscode"},
    {"type": "service", "port": 8000, "commands": ["serve"], "replicas": 2},
]


def _objects(conf_data: dict[str, Any], *, job_num: int = 0) -> Any:
    conf = configuration_from_mapping({"name": "pod-defaults", **conf_data})
    run = Run(
        id="r1",
        project="main",
        name="pod-defaults",
        user="admin",
        configuration=conf.model_dump(mode="json"),
        configuration_type=conf.type,
    )
    job = Job(
        id="j1",
        run_id="r1",
        project="main",
        run_name="pod-defaults",
        job_num=job_num,
        jobs_in_run=int(conf_data.get("nodes", 1)),
        placement=Placement(node="n1", gpu_resource="nvidia.com/gpu", gpus=1),
    )
    return build_job_objects(
        run, job, conf, PodContext(default_image="img", ssh_public_keys=("ssh-ed25519 AAAA x",))
    )


@pytest.mark.parametrize("conf", CONFIGURATIONS, ids=lambda c: str(sorted(c)))
def test_generated_pods_mount_no_token_and_touch_nothing_of_the_host(conf: dict[str, Any]) -> None:
    spec = _objects(conf).pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    assert "serviceAccountName" not in spec
    for container in spec["containers"]:
        context = container.get("securityContext") or {}
        assert bool(context.get("privileged")) == bool(conf.get("privileged"))
        assert not context.get("allowPrivilegeEscalation") or conf.get("privileged")
        assert "capabilities" not in context
        shell, flag, _script = container["command"]
        assert flag == "-c" and shell.startswith("/")
