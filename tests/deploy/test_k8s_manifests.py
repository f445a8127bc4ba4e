"""The manifests in deploy/k8s, read as data: safe by default and true to the code.

The apiserver's own verdict on them is in ``test_k8s_apiserver.py``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from shared.configuration.server import server_config_from_text
from shared.settings import PLACEHOLDER_SECRET
from tests.deploy.kube_calls import Access, accesses_granted, accesses_in_code, accesses_of
from tests.rbac import K8S_DIR, TEMPLATES, load_manifests, manifest
from tests.stack import BERTH

RUNS_NAMESPACE = "berth-runs"
WORKLOADS = ("Deployment", "StatefulSet")
# The components that call the Kubernetes API: they alone carry the ServiceAccount token.
KUBE_CLIENTS = {"berth-api", "berth-worker", "berth-proxy-worker", "berth-log-collector"}


def workloads() -> Iterator[dict[str, Any]]:
    yield from (d for d in load_manifests() if d["kind"] in WORKLOADS)


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for w in workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            yield w["metadata"]["name"], c


def test_the_kustomization_lists_every_manifest_file_but_the_secret_template() -> None:
    listed = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    # Applying the kustomization must never overwrite real secrets with placeholders.
    assert sorted(listed) == sorted(on_disk - set(TEMPLATES))
    assert not any(d["kind"] == "Secret" for d in _kustomized())


def _kustomized() -> list[dict[str, Any]]:
    listing = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return [
        doc
        for name in listing["resources"]
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text())
        if doc
    ]


def test_berth_runs_in_its_own_namespace_and_its_work_in_another() -> None:
    namespaces = {d["metadata"]["name"] for d in load_manifests() if d["kind"] == "Namespace"}
    assert namespaces == {"berth", RUNS_NAMESPACE}
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for d in load_manifests():
        if d["kind"] in cluster_scoped:
            continue
        expected = RUNS_NAMESPACE if d["kind"] in ("Role", "RoleBinding") else "berth"
        assert d["metadata"].get("namespace") == expected, f"{d['kind']} {d['metadata']['name']}"


def test_every_pod_runs_as_non_root_with_no_capabilities_and_a_read_only_root() -> None:
    for w in workloads():
        pod = w["spec"]["template"]["spec"]
        name = w["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    for name, c in containers():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name


def test_every_container_requests_cpu_and_memory_and_caps_memory() -> None:
    for name, c in containers():
        assert set(c["resources"]["requests"]) == {"cpu", "memory"}, name
        assert "memory" in c["resources"]["limits"], name


def test_every_berth_container_runs_a_real_berth_command() -> None:
    for name, c in containers():
        if not c["image"].startswith("berth:"):
            continue
        result = subprocess.run(
            [BERTH, *c["args"], "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{name}: berth {' '.join(c['args'])}\n{result.stderr}"


def test_only_the_pods_that_call_kubernetes_get_a_token() -> None:
    for w in workloads():
        pod = w["spec"]["template"]["spec"]
        name = w["metadata"]["name"]
        if name in KUBE_CLIENTS:
            assert pod["serviceAccountName"] == "berth", name
            assert pod.get("automountServiceAccountToken", True) is True, name
        else:
            assert "serviceAccountName" not in pod, name
            assert pod["automountServiceAccountToken"] is False, name


def test_beat_is_a_singleton_that_is_stopped_before_it_is_replaced() -> None:
    beat = manifest("Deployment", "berth-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_redis_keeps_an_append_only_file_on_a_volume_and_never_evicts() -> None:
    redis = manifest("StatefulSet", "berth-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"
    # Redis must refuse writes before the kernel kills it at the container limit.
    assert _mebibytes(flags["--maxmemory"]) < _mebibytes(container["resources"]["limits"]["memory"])
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": flags["--dir"]} in container[
        "volumeMounts"
    ]


def _mebibytes(quantity: str) -> int:
    units = {"mb": 1, "Mi": 1, "gb": 1024, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    raise ValueError(quantity)


def test_the_secret_template_holds_only_documented_placeholders() -> None:
    secret = manifest("Secret", "berth-secrets")
    assert "data" not in secret  # base64 would hide a real value from review
    assert secret["stringData"], "the template should name every key Berth reads"
    for key, value in secret["stringData"].items():
        assert PLACEHOLDER_SECRET in value, f"{key} holds something other than the placeholder"
    text = (K8S_DIR / "secret.yaml").read_text()
    assert "A TEMPLATE" in text
    assert text.count("# placeholder:") == len(secret["stringData"])


def test_every_secret_and_config_map_a_pod_names_exists() -> None:
    secret = manifest("Secret", "berth-secrets")
    config_map = manifest("ConfigMap", "berth-config")
    for name, c in containers():
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == "berth-secrets", name
                assert ref["key"] in secret["stringData"], f"{name}: {ref['key']}"
    for w in workloads():
        for volume in w["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "berth-secrets"
                for item in volume["secret"]["items"]:
                    assert item["key"] in secret["stringData"], item


def test_berths_ssh_key_is_a_secret_file_only_its_group_may_read() -> None:
    for name, c in containers():
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if name not in ("berth-api", "berth-proxy-worker"):
            assert "BERTH_SSH__KEY_FILE" not in env, name  # only what uses the key mounts it
            continue
        assert env["BERTH_SSH__KEY_FILE"] == "/etc/berth-ssh/id_ed25519", name
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["ssh-key"]["mountPath"] == "/etc/berth-ssh"
        assert mounts["ssh-key"]["readOnly"] is True
    for w in workloads():
        for volume in w["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440
                assert volume["secret"]["items"] == [{"key": "ssh-key", "path": "id_ed25519"}]


def test_berth_containers_run_in_production_mode_against_the_password_protected_redis() -> None:
    for name, c in containers():
        if not c["image"].startswith("berth:"):
            continue
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["BERTH_ENVIRONMENT"] == "production", name
        assert env["BERTH_REDIS__URL"] == "redis://:$(REDIS_PASSWORD)@berth-redis:6379/0", name
        # $(VAR) expands only if VAR is defined earlier in the list.
        names = [e["name"] for e in c["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("BERTH_REDIS__URL"), name


def test_the_server_config_in_the_config_map_is_valid_and_uses_the_runs_namespace() -> None:
    data = manifest("ConfigMap", "berth-config")["data"]
    server = server_config_from_text(data["config.yml"], source="configmap berth-config")
    for project in server.project_names():
        backend = server.backend_for(project)
        assert backend.namespace == RUNS_NAMESPACE  # where the Role applies
        assert backend.kubeconfig.filename == "/etc/berth/kubeconfig"  # the mounted key
    assert "kubeconfig" in data


def test_the_api_and_flower_are_probed_over_http_and_workers_by_a_celery_ping() -> None:
    for name, path in (("berth-api", "/health"), ("berth-flower", "/healthcheck")):
        [c] = manifest("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert c["readinessProbe"]["httpGet"]["path"] == path
        assert c["livenessProbe"]["httpGet"]["path"] == path
    [worker] = manifest("Deployment", "berth-worker")["spec"]["template"]["spec"]["containers"]
    assert "inspect ping" in " ".join(worker["livenessProbe"]["exec"]["command"])


def test_the_role_grants_exactly_the_kubernetes_calls_berths_code_makes() -> None:
    needed = accesses_in_code()
    granted = accesses_granted(manifest("Role", "berth"), manifest("ClusterRole", "berth"))
    missing = sorted(set(needed) - granted)
    unused = sorted(granted - set(needed))
    assert not missing, "deploy/k8s/rbac.yaml lacks: " + "; ".join(
        f"{a} for {', '.join(needed[a])}" for a in missing
    )
    assert not unused, "deploy/k8s/rbac.yaml grants what no code uses: " + "; ".join(
        map(str, unused)
    )


@pytest.mark.parametrize(
    ("group", "method", "expected"),
    [
        ("core", "read_namespaced_pod_log", "get pods/log (namespace)"),
        ("core", "delete_collection_namespaced_secret", "deletecollection secrets (namespace)"),
        ("core", "list_pod_for_all_namespaces", "list pods (cluster)"),
        ("core", "read_node", "get nodes (cluster)"),
        ("apps", "patch_namespaced_deployment", "patch apps/deployments (namespace)"),
        ("core", "replace_namespaced_config_map", "update configmaps (namespace)"),
    ],
)
def test_the_code_reader_maps_client_methods_to_rbac_verbs(
    group: str, method: str, expected: str
) -> None:
    [access] = accesses_of(group, method, watches=False)
    assert str(access) == expected


def test_a_module_that_watches_needs_watch_on_what_it_lists() -> None:
    assert accesses_of("core", "list_node", watches=True) == [
        Access("cluster", "", "nodes", "list"),
        Access("cluster", "", "nodes", "watch"),
    ]
