"""A namespace that enforces Pod Security ``restricted`` admits Berth's pods.

The real apiserver's PodSecurity admission plugin is the judge: each pod Berth
builds at ``restricted`` (task, dev environment, service, both ranks of a
multi-node task, the jump host's pod template) is created with a server-side
dry run, which runs admission and stores nothing. The pods Berth builds by
default are refused there, so the check is not vacuous. Berth reads the label
with its own RBAC, and falls back to its setting when it cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.local import cluster
from shared import kube
from shared.configuration import configuration_from_mapping
from shared.errors import KubeForbidden
from shared.policy import pod_security
from shared.ssh import new_host_key
from shared.state.records import Job, Placement, Run
from tests.rbac import berth_kubeconfig
from workers.jumphost_objects import JumpHostTarget, jump_objects
from workers.podspec import PodContext, build_job_objects

pytestmark = pytest.mark.integration

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "task": {"type": "task", "commands": ["python3 train.py"]},
    "dev-environment": {"type": "dev-environment", "ide": "vscode"},
    "service": {"type": "service", "port": 8000, "commands": ["serve"]},
    "multi-node": {"type": "task", "commands": ["torchrun"], "nodes": 2},
}


@pytest.fixture
def locked(kube_admin: kube.Kube, namespace: str) -> str:
    k = kube_admin
    labels = {pod_security.ENFORCE_LABEL: "restricted"}
    k.call(k.core.patch_namespace, namespace, {"metadata": {"labels": labels}})
    return namespace


def _pods(level: pod_security.Level) -> list[dict[str, Any]]:
    pods = []
    for name, data in CONFIGURATIONS.items():
        conf = configuration_from_mapping({"name": f"ps-{name}", **data})
        run = Run(
            id="r",
            project="main",
            name=f"ps-{name}",
            user="admin",
            configuration=conf.model_dump(mode="json"),
            configuration_type=conf.type,
        )
        for rank in range(int(data.get("nodes", 1))):
            job = Job(
                id=f"j{rank}",
                run_id="r",
                project="main",
                run_name=run.name,
                job_num=rank,
                jobs_in_run=int(data.get("nodes", 1)),
                placement=Placement(node="n1", gpu_resource="nvidia.com/gpu", gpus=1),
            )
            ctx = PodContext(
                default_image="berth.local/run:x",
                master_ip="10.244.0.9" if rank else None,
                ssh_public_keys=("ssh-ed25519 AAAA user",),
                pod_security=level,
            )
            pods.append(build_job_objects(run, job, conf, ctx).pod)
    target = JumpHostTarget(
        id="c/ns/berth-jump-30022",
        name="berth-jump-30022",
        namespace="ns",
        cluster_key="c",
        projects=("main",),
        hostname="127.0.0.1",
        port=30022,
    )
    jump = jump_objects(target, image="j", keys="k\n", host_key=new_host_key(), pod_security=level)
    template = jump.deployment["spec"]["template"]
    pods.append({"metadata": {"name": "jump", **template["metadata"]}, "spec": template["spec"]})
    return pods


def test_a_restricted_namespace_admits_every_pod_berth_builds_at_restricted(
    kube_admin: kube.Kube, locked: str
) -> None:
    k = kube_admin
    for pod in _pods("restricted"):
        k.call(k.core.create_namespaced_pod, locked, pod, dry_run="All")


def test_the_same_namespace_refuses_the_pods_berth_builds_by_default(
    kube_admin: kube.Kube, locked: str
) -> None:
    k = kube_admin
    for pod in _pods("privileged"):
        with pytest.raises(KubeForbidden) as e:
            k.call(k.core.create_namespaced_pod, locked, pod, dry_run="All")
        assert 'violates PodSecurity "restricted' in str(e.value)


def test_berth_reads_the_label_with_its_shipped_rbac(
    kube_admin: kube.Kube,
    local_cluster: cluster.ClusterState,
    locked: str,
    tmp_path: Path,
) -> None:
    path = berth_kubeconfig(kube_admin, local_cluster, namespace=locked, directory=tmp_path)
    k = kube.connect(kubeconfig=path, timeout=10.0)
    try:
        decision = pod_security.level_for(k, locked, configured="privileged")
    finally:
        k.close()
    assert decision.level == "restricted"
    assert decision.source == f"namespace label {pod_security.ENFORCE_LABEL}=restricted"


def test_an_unlabelled_namespace_leaves_the_configured_level(
    kube_admin: kube.Kube, namespace: str
) -> None:
    decision = pod_security.level_for(kube_admin, namespace, configured="baseline")
    assert (decision.level, decision.source) == ("baseline", "server config")


def test_a_label_berth_may_not_read_falls_back_to_the_configured_level(
    local_cluster: cluster.ClusterState, locked: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-valid-token"}
    path = tmp_path / "refused.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    k = kube.connect(kubeconfig=path, timeout=10.0)
    try:
        decision = pod_security.level_for(k, locked, configured="restricted")
    finally:
        k.close()
    assert decision.level == "restricted"
    assert decision.source.startswith("server config (namespace label not readable")
