"""deploy/k8s with the Sentinel component, read as data: the Redis group and Berth's
settings agree, and every Deployment runs as many replicas as was decided.

Each test runs on two renderings of ``deploy/k8s-sentinel``: kustomize's own (when
``kustomize`` or ``kubectl`` is installed), and :func:`apply_component`, which applies
the component's patches here, in the subset of kustomize they use, so the checks
run without either tool.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import RedisSettings, Settings
from shared.state import redis_client
from tests.rbac import K8S_DIR

COMPONENT = K8S_DIR / "sentinel"
OVERLAY = K8S_DIR.parent / "k8s-sentinel"
# Decided per Deployment (the reason is beside `replicas` in each manifest). A new
# Deployment fails here until someone decides its count too.
REPLICAS = {
    "berth-api": 2,  # stateless: runs and sessions live in Redis
    "berth-worker": 2,  # tasks are idempotent and acknowledged late
    "berth-proxy-worker": 2,  # leader and standby through a Redis lease
    "berth-log-collector": 2,  # leader and standby through a Redis lease
    "berth-beat": 1,  # a second beat would send every periodic task twice
    "berth-flower": 1,  # its task history is in memory; two would disagree
}

Doc = dict[str, Any]


@pytest.fixture(params=["patches", "kustomize"], scope="module")
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    if request.param == "patches":
        return apply_component()
    tool = shutil.which("kustomize") or shutil.which("kubectl")
    if tool is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    argv = [tool, "build" if tool.endswith("kustomize") else "kustomize", str(OVERLAY)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def apply_component() -> list[Doc]:
    """deploy/k8s's resources with the component's resources and patches applied."""
    docs = _resources(K8S_DIR)
    component = _kustomization(COMPONENT)
    docs += [d for name in component["resources"] for d in _load(COMPONENT / name)]
    for patch in component["patches"]:
        [body] = _load(COMPONENT / patch["path"])
        if "target" in patch:
            for doc in _selected(docs, patch["target"]):
                for op in body:
                    _json_patch_add(doc, op)
        else:
            [index] = [i for i, d in enumerate(docs) if _same_object(d, body)]
            docs[index] = _strategic_merge(docs[index], body)
    return docs


def test_every_kustomization_names_files_and_objects_that_exist() -> None:
    assert _kustomization(OVERLAY)["resources"] == ["../k8s"]
    assert _kustomization(OVERLAY)["components"] == ["../k8s/sentinel"]
    base = _resources(K8S_DIR)
    for patch in _kustomization(COMPONENT)["patches"]:
        [body] = _load(COMPONENT / patch["path"])
        if "target" in patch:
            assert _selected(base, patch["target"]), f"{patch['path']} selects nothing"
        else:
            assert [d for d in base if _same_object(d, body)], f"{patch['path']}: no such object"
    # The JSON patch must reach every Berth process, or one of them keeps the lone URL.
    berth_workloads = {d["metadata"]["name"] for d in base if _runs_berth(d)}
    [env_patch] = [p for p in _kustomization(COMPONENT)["patches"] if "target" in p]
    assert {d["metadata"]["name"] for d in _selected(base, env_patch["target"])} == berth_workloads


def test_every_berth_process_reads_the_sentinel_group_through_its_settings(
    rendered: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = _one(rendered, "StatefulSet", "berth-redis")
    name, service = redis["metadata"]["name"], redis["spec"]["serviceName"]
    pods = [f"{name}-{i}.{service}" for i in range(redis["spec"]["replicas"])]
    script = _scripts(rendered)["common.sh"]
    for workload in filter(_runs_berth, rendered):
        [container] = workload["spec"]["template"]["spec"]["containers"]
        env = _environment(container["env"])
        redis_names = [n for n in env if n.startswith("BERTH_REDIS__")]
        # A renamed setting would be ignored (extra="ignore"), not refused: name each one.
        unknown = [n for n in redis_names if _field(n) not in RedisSettings.model_fields]
        assert not unknown, f"{workload['metadata']['name']}: no such setting {unknown}"
        for name in [n for n in os.environ if n.startswith("BERTH_")]:
            monkeypatch.delenv(name)
        for name in redis_names:
            monkeypatch.setenv(name, env[name])
        settings = Settings().redis
        assert settings.sentinel_addresses == [
            (p, _constant(script, "SENTINEL_PORT")) for p in pods
        ]
        assert settings.master_name == _constant(script, "MASTER_NAME")
        assert settings.sentinel_password == "<redis-password>"  # the servers' own password
        assert settings.min_replica_acks >= 1, "a failover could lose an acknowledged run"
        assert redis_client.broker_url(settings).startswith("sentinel://")  # Celery and Flower
        assert (
            redis_client.broker_transport_options(settings)["master_name"] == settings.master_name
        )


def test_three_pods_each_run_redis_and_a_sentinel_known_by_name(rendered: list[Doc]) -> None:
    redis = _one(rendered, "StatefulSet", "berth-redis")
    base_redis = _one(_resources(K8S_DIR), "StatefulSet", "berth-redis")
    containers = {c["name"]: c for c in redis["spec"]["template"]["spec"]["containers"]}
    scripts = _scripts(rendered)
    assert redis["spec"]["replicas"] == _constant(scripts["common.sh"], "PODS") == 3
    assert redis["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
    # The base's AOF, noeviction and password flags reach redis-server unchanged.
    [base_container] = base_redis["spec"]["template"]["spec"]["containers"]
    assert containers["redis"]["args"] == base_container["args"]
    assert containers["redis"]["command"] == ["sh", "/berth-redis/start-redis.sh"]
    assert containers["sentinel"]["command"] == ["sh", "/berth-redis/start-sentinel.sh"]
    # Names, not IPs: a pod back with a new IP is the same replica and Sentinel.
    assert '--replica-announce-ip "$FQDN"' in scripts["start-redis.sh"]
    conf = scripts["start-sentinel.sh"]
    for line in ("resolve-hostnames yes", "announce-hostnames yes", "announce-ip $FQDN"):
        assert f"sentinel {line}\n" in conf
    assert conf.index("resolve-hostnames") < conf.index("sentinel monitor")
    # Two of three Sentinels agree a primary is down: a majority, so one pod may go.
    assert "sentinel monitor $MASTER_NAME $primary $REDIS_PORT 2\n" in conf
    service = _one(rendered, "Service", redis["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in service["spec"]["ports"]} == {6379, 26379}
    policy = _one(rendered, "NetworkPolicy", "berth-redis")
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [6379, 26379]


def test_a_voluntary_disruption_leaves_a_quorum_and_the_replica_berth_waits_for(
    rendered: list[Doc],
) -> None:
    redis = _one(rendered, "StatefulSet", "berth-redis")
    budget = _one(rendered, "PodDisruptionBudget", "berth-redis")
    labels = redis["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    acks = max(
        int(e["value"])
        for w in filter(_runs_berth, rendered)
        for e in w["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "BERTH_REDIS__MIN_REPLICA_ACKS"
    )
    left = redis["spec"]["replicas"] - budget["spec"]["maxUnavailable"]
    assert left - 1 >= acks, "a drain would stop submissions (no replica to acknowledge)"
    assert left >= 2, "a drain would leave the Sentinels without a quorum"


def test_the_sentinel_container_is_as_locked_down_as_the_others(rendered: list[Doc]) -> None:
    redis = _one(rendered, "StatefulSet", "berth-redis")
    [sentinel] = [
        c for c in redis["spec"]["template"]["spec"]["containers"] if c["name"] == "sentinel"
    ]
    assert sentinel["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(sentinel["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in sentinel["resources"]["limits"]


def test_each_deployment_runs_the_replicas_decided_for_it_and_beat_runs_alone(
    rendered: list[Doc],
) -> None:
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    assert {name: d["spec"]["replicas"] for name, d in deployments.items()} == REPLICAS
    assert deployments["berth-beat"]["spec"]["strategy"] == {"type": "Recreate"}


def _kustomization(directory: Path) -> Doc:
    [doc] = _load(directory / "kustomization.yaml")
    assert isinstance(doc, dict)
    return doc


def _load(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _resources(directory: Path) -> list[Doc]:
    return [d for name in _kustomization(directory)["resources"] for d in _load(directory / name)]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _runs_berth(doc: Doc) -> bool:
    if doc["kind"] not in ("Deployment", "StatefulSet"):
        return False
    return any(
        c["image"].startswith("berth:") for c in doc["spec"]["template"]["spec"]["containers"]
    )


def _same_object(doc: Doc, patch: Doc) -> bool:
    return bool(
        doc["kind"] == patch["kind"] and doc["metadata"]["name"] == patch["metadata"]["name"]
    )


def _selected(docs: list[Doc], target: Doc) -> list[Doc]:
    key, _, value = target["labelSelector"].partition("=")
    return [
        d
        for d in docs
        if d["kind"] == target["kind"] and d["metadata"].get("labels", {}).get(key) == value
    ]


def _json_patch_add(doc: Doc, op: Doc) -> None:
    assert op["op"] == "add", f"only 'add' is applied here, not {op['op']!r}"
    *parents, last = op["path"].strip("/").split("/")
    node: Any = doc
    for token in parents:
        node = node[int(token)] if isinstance(node, list) else node[token]
    if last == "-":
        node.append(op["value"])
    else:
        node[last] = op["value"]


# What kustomize merges list items by (containers, env, volumes: name; Service ports:
# port), for the lists these patches touch; any other list is replaced, as kustomize does.
_MERGE_KEYS = ("name", "mountPath", "port")


def _strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        return base | {
            k: _strategic_merge(base[k], v) if k in base else v for k, v in patch.items()
        }
    if isinstance(base, list) and isinstance(patch, list):
        items = [*base, *patch]
        key = next(
            (k for k in _MERGE_KEYS if all(isinstance(i, dict) and k in i for i in items)), None
        )
        if key is not None:
            merged = {item[key]: item for item in base}
            for item in patch:
                old = merged.get(item[key])
                merged[item[key]] = item if old is None else _strategic_merge(old, item)
            return list(merged.values())
    return patch


def _environment(entries: list[Doc]) -> dict[str, str]:
    """A container's env as the kubelet builds it: a Secret's value stands as
    ``<key>``, and ``$(NAME)`` expands to an entry defined earlier."""
    env: dict[str, str] = {}
    for entry in entries:
        if "valueFrom" in entry:
            env[entry["name"]] = f"<{entry['valueFrom']['secretKeyRef']['key']}>"
        else:
            env[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), entry["value"]
            )
    return env


def _field(env_name: str) -> str:
    """``BERTH_REDIS__MASTER_NAME`` -> ``master_name`` (pydantic-settings' nesting)."""
    return env_name.removeprefix("BERTH_REDIS__").lower()


def _scripts(docs: list[Doc]) -> dict[str, str]:
    redis = _one(docs, "StatefulSet", "berth-redis")
    volumes = {v["name"]: v for v in redis["spec"]["template"]["spec"]["volumes"]}
    data: dict[str, str] = _one(docs, "ConfigMap", volumes["scripts"]["configMap"]["name"])["data"]
    return data


def _constant(script: str, name: str) -> Any:
    [value] = re.findall(rf"^{name}=(\S+)", script, flags=re.MULTILINE)
    return int(value) if value.isdigit() else value
