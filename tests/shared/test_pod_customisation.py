"""Pods shaped to the cluster's rules, their volumes, and that they download nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from api.services.offers import pod_requests
from shared import kube
from shared.configuration import PodSettings, parse_configuration, parse_run_configuration
from shared.configuration.parse import configuration_from_stored
from shared.configuration.server import server_config_from_text
from shared.errors import ConfigError
from shared.placement.requests import request_for
from shared.policy.pod_customisation import customise_pod, split_tags
from shared.state.records import Job, Placement, Run
from workers.podspec import ClaimMount, PodContext, build_job_objects

EXAMPLES = Path(__file__).with_name("dstack_examples")


def _backend(extra: str) -> str:
    return (
        "projects:\n- name: main\n  backends:\n  - type: kubernetes\n"
        "    kubeconfig: {filename: /k}\n" + "".join(f"    {line}\n" for line in extra.splitlines())
    )


def _config_error(extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        server_config_from_text(_backend(extra))
    return caught.value


def _objects(conf_text: str, ctx: PodContext, *, jobs: int = 1, rank: int = 0) -> dict[str, Any]:
    conf = parse_run_configuration(conf_text)
    run = Run(
        id="r", project="main", name="train", user="u", configuration={},
        configuration_type=conf.type,
    )  # fmt: skip
    job = Job(
        id="j", run_id="r", project="main", run_name="train", job_num=rank, jobs_in_run=jobs,
        placement=Placement(node="gpu-1", gpu_resource="nvidia.com/gpu", gpus=1),
    )  # fmt: skip
    return build_job_objects(run, job, conf, ctx).pod


# --- the server configuration ---------------------------------------------------------


def test_every_pod_setting_is_read_from_the_backend() -> None:
    server = server_config_from_text(
        _backend(
            "pod:\n"
            "  node_selector: {cloud.example.com/pool: gpu}\n"
            "  tolerations: [{key: dedicated, operator: Equal, value: ml, effect: NoSchedule}]\n"
            "  labels: {team: ml}\n"
            "  annotations: {example.com/cost-center: '42'}\n"
            "  priority_class_name: batch-low\n"
            "  service_account_name: runner\n"
            "  runtime_class_name: nvidia\n"
            "  image_pull_secrets: [registry-creds]\n"
            "  security_context: {runAsUser: 1000, fsGroup: 1000,\n"
            "    seccompProfile: {type: RuntimeDefault}}\n"
        )
    )
    pod = server.backend_for("main").pod_settings()
    assert pod.node_selector == {"cloud.example.com/pool": "gpu"}
    assert pod.tolerations[0].to_kubernetes() == {
        "key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"
    }  # fmt: skip
    assert pod.security_context is not None
    assert pod.security_context.to_kubernetes() == {
        "runAsUser": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}
    }  # fmt: skip
    assert not pod.automount_service_account_token


def test_a_context_adds_its_own_pod_settings_on_top_of_the_backends() -> None:
    server = server_config_from_text(
        _backend(
            "pod: {labels: {team: ml, env: prod}, tolerations: [{key: a, operator: Exists}]}\n"
            "contexts:\n"
            "- name: east\n"
            "  pod: {labels: {env: staging}, tolerations: [{key: b, operator: Exists}],"
            " priority_class_name: high}\n"
        )
    )
    pod = server.backend_for("main").pod_settings()
    assert pod.labels == {"team": "ml", "env": "staging"}
    assert [t.key for t in pod.tolerations] == ["a", "b"]
    assert pod.priority_class_name == "high"


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (
            "pod: {labels: {berth.dev/run: mine}}",
            "projects.0.backends.0.pod.labels",
            "reserved for Berth",
        ),
        (
            "pod: {labels: {app.kubernetes.io/managed-by: me}}",
            "projects.0.backends.0.pod.labels",
            "reserved for Berth",
        ),
        (
            "pod: {node_selector: {'bad key!': x}}",
            "projects.0.backends.0.pod.node_selector.bad key!",
            "invalid key 'bad key!'",
        ),
        (
            "pod: {labels: {team: 'has spaces'}}",
            "projects.0.backends.0.pod.labels.team",
            "invalid label value 'has spaces'",
        ),
        (
            "pod: {priority_class_name: High_Priority}",
            "projects.0.backends.0.pod.priority_class_name",
            "DNS-1123 subdomain",
        ),
        (
            "pod: {tolerations: [{key: a, operator: Exists, value: b}]}",
            "projects.0.backends.0.pod.tolerations.0.value",
            "must be empty when operator is Exists",
        ),
        (
            "pod: {tolerations: [{key: a, tolerationSeconds: 5, effect: NoSchedule}]}",
            "projects.0.backends.0.pod.tolerations.0.tolerationSeconds",
            "only allowed with effect NoExecute",
        ),
        (
            "pod: {tolerations: [{value: b}]}",
            "projects.0.backends.0.pod.tolerations.0.operator",
            "must use operator Exists",
        ),
        (
            "pod: {security_context: {privileged: true}}",
            "projects.0.backends.0.pod.security_context.privileged",
            "unknown field",
        ),
        (
            "pod: {nodeSelector: {a: b}}",
            "projects.0.backends.0.pod.nodeSelector",
            "did you mean node_selector?",
        ),
    ],
)
def test_a_bad_pod_setting_names_its_field_and_the_rule(extra: str, field: str, words: str) -> None:
    error = _config_error(extra)
    assert error.field is not None and error.field.startswith(field)
    assert words in error.message


# --- applying the settings -----------------------------------------------------------


def test_settings_and_tags_are_added_and_berths_own_fields_are_kept() -> None:
    settings = PodSettings.model_validate(
        {
            "node_selector": {"pool": "gpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "labels": {"team": "ml"},
            "annotations": {"example.com/owner": "ml-infra"},
            "priority_class_name": "batch",
            "service_account_name": "runner",
            "runtime_class_name": "nvidia",
            "image_pull_secrets": ["creds"],
            "security_context": {"runAsNonRoot": True},
        }
    )
    pod = _objects(
        "type: task\nimage: x\ncommands: [echo]\ntags: {team: other, note: hello world}\n",
        PodContext(default_image="img", pod_settings=settings),
    )
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"]["team"] == "ml"  # the operator's label wins over the run's tag
    assert meta["labels"][kube.LABEL_RUN] == "train"  # Berth's own can never be replaced
    assert meta["labels"][kube.LABEL_MANAGED] == "berth"
    assert meta["annotations"] == {"note": "hello world", "example.com/owner": "ml-infra"}
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists", "value": ""},
    ]
    assert (spec["priorityClassName"], spec["serviceAccountName"], spec["runtimeClassName"]) == (
        "batch",
        "runner",
        "nvidia",
    )
    assert spec["imagePullSecrets"] == [{"name": "creds"}]
    assert spec["securityContext"] == {"runAsNonRoot": True}
    assert spec["automountServiceAccountToken"] is False
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["gpu-1"]


def test_the_service_account_token_is_mounted_only_when_the_operator_says_so() -> None:
    settings = PodSettings(service_account_name="runner", automount_service_account_token=True)
    pod = _objects("type: task\nimage: x", PodContext(default_image="i", pod_settings=settings))
    assert pod["spec"]["automountServiceAccountToken"] is True
    plain = _objects("type: task\nimage: x", PodContext(default_image="i"))
    assert plain["spec"]["automountServiceAccountToken"] is False


def test_berth_labels_win_even_over_a_pod_handed_in_with_clashing_settings() -> None:
    # Validation refuses reserved keys; the function does not rely on it.
    settings = PodSettings.model_construct(labels={kube.LABEL_RUN: "evil"})
    pod = {"metadata": {"labels": {kube.LABEL_RUN: "train"}}, "spec": {}}
    assert customise_pod(pod, settings)["metadata"]["labels"] == {kube.LABEL_RUN: "train"}


def test_tags_become_labels_when_they_can_and_annotations_otherwise() -> None:
    labels, annotations = split_tags(
        {"team": "ml", "owner": "a@b.com", "-odd": "x", "berth.dev/job": "j", "long": "v" * 64}
    )
    assert labels == {"team": "ml"}
    assert annotations == {"owner": "a@b.com", "long": "v" * 64}


# --- volumes in the pod ----------------------------------------------------------------


def test_volumes_mount_their_claims_read_only_where_asked() -> None:
    pod = _objects(
        "type: task\nimage: x\nvolumes: ['data:/data', {name: ckpt, path: /ckpt, read_only: true},"
        " 'ro:/ro']",
        PodContext(
            default_image="i",
            claims={
                "data": ClaimMount("pvc-data"),
                "ckpt": ClaimMount("pvc-ckpt"),
                "ro": ClaimMount("pvc-ro", read_only=True),
            },
        ),
    )
    container = pod["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/data"]["name"]]["persistentVolumeClaim"] == {
        "claimName": "pvc-data", "readOnly": False
    }  # fmt: skip
    assert "readOnly" not in mounts["/data"]
    assert mounts["/ckpt"]["readOnly"] is True
    assert volumes[mounts["/ckpt"]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    assert mounts["/ro"]["readOnly"] is True  # the volume itself is read-only


def test_node_directories_are_host_paths_where_allowed_and_optional_ones_drop_out() -> None:
    text = (
        "type: task\nimage: x\nvolumes: ['/mnt/hf:/hf', {instance_path: /scratch, path: /s,"
        " optional: true}]"
    )
    allowed = _objects(text, PodContext(default_image="i", allow_host_volumes=True))
    host = [v for v in allowed["spec"]["volumes"] if "hostPath" in v]
    assert [v["hostPath"]["path"] for v in host] == ["/mnt/hf", "/scratch"]
    optional_only = text.replace("'/mnt/hf:/hf', ", "")
    off = _objects(optional_only, PodContext(default_image="i"))
    assert not any("hostPath" in v for v in off["spec"]["volumes"])


# --- air-gapped: nothing in a pod reaches for the network ------------------------------

_NETWORK = re.compile(r"\bcurl\b|\bwget\b|pip3? install|apt-get|apt install|[a-z]+://", re.I)
_CONFIGS = {
    "task": "type: task\nimage: x\ncommands: [python train.py]",
    "dev-environment": "type: dev-environment\nide: vscode\ninit: [echo ready]",
    "service": "type: service\nport: 8000\ncommands: [python -m http.server 8000]",
    **{p.stem: p.read_text() for p in EXAMPLES.glob("*.dstack.yml") if "fleet" not in p.stem},
}


def _berths_commands(pod: dict[str, Any], conf: Any) -> list[str]:
    """Every command of the pod, with the user's own lines cut out: those are theirs."""
    own = [*(getattr(conf, "commands", None) or []), *(getattr(conf, "init", None) or [])]
    spec = pod["spec"]
    found: list[str] = []
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for part in container.get("command", []) + container.get("args", []):
            for line in own:
                part = part.replace(line, "")
            found.append(part)
    return found


@pytest.mark.parametrize("name", sorted(_CONFIGS))
@pytest.mark.parametrize("init_image", [None, "registry.local/berth-sshd:1"])
@pytest.mark.parametrize("rank", [(1, 0), (2, 0), (2, 1)])
def test_no_pod_command_downloads_anything(
    name: str, init_image: str | None, rank: tuple[int, int]
) -> None:
    jobs, num = rank
    conf = parse_configuration(_CONFIGS[name])
    claims = {m.name: ClaimMount(f"pvc-{m.name}") for m in getattr(conf, "volumes", []) if m.name}
    ctx = PodContext(
        default_image="img",
        ssh_public_keys=("ssh-ed25519 AAAA me",),
        ssh_init_image=init_image,
        claims=claims,
        allow_host_volumes=True,
        master_ip="10.0.0.1",
    )
    pod = _objects(_CONFIGS[name], ctx, jobs=jobs, rank=num)
    commands = _berths_commands(pod, conf)
    assert commands, "every pod runs a command"
    for command in commands:
        assert not _NETWORK.search(command), command


def test_with_an_init_image_sshd_is_copied_into_a_shared_volume() -> None:
    ctx = PodContext(default_image="i", ssh_public_keys=("k",), ssh_init_image="sshd-img:1")
    pod = _objects("type: task\nimage: x\ncommands: [echo]", ctx)
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == "sshd-img:1"
    assert init["command"] == ["cp", "-a", "/berth/ssh/.", "/berth/tools/"]
    main = pod["spec"]["containers"][0]
    assert {"name": "berth-tools", "mountPath": "/berth/tools", "readOnly": True} in main[
        "volumeMounts"
    ]
    script = main["command"][-1]
    # The image's own sshd first; else the kit's, with its own config (see the real-node tier).
    assert "if sshd=$(command -v sshd); then conf=''; else" in script
    assert "sshd=/berth/tools/sshd; conf='-f /berth/tools/sshd_config'" in script
    assert {"name": "berth-tools", "emptyDir": {}} in pod["spec"]["volumes"]


def test_without_an_init_image_the_pod_uses_the_images_own_sshd_and_no_init_container() -> None:
    ctx = PodContext(default_image="i", ssh_public_keys=("k",))
    pod = _objects("type: task\nimage: x\ncommands: [echo]", ctx)
    assert "initContainers" not in pod["spec"]
    assert "command -v sshd" in pod["spec"]["containers"][0]["command"][-1]


# --- defaults: what a pod requests ------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ("", {"cpu": "2000m", "memory": "8Gi"}),
        ("resources: {disk: 100GB..}", {"cpu": "2000m", "memory": "8Gi"}),
        (
            "resources: {cpu: 8.., memory: 64GB.., disk: 500GB.., gpu: H100:2}",
            {"cpu": "8000m", "memory": "64Gi", "gpu": "2 (H100)", "ephemeral-storage": "500Gi"},
        ),
    ],
)
def test_a_run_requests_dstacks_lower_bounds_and_disk_only_when_set(
    resources: str, expected: dict[str, str]
) -> None:
    conf = parse_run_configuration(f"type: task\nimage: x\n{resources}")
    # What the scheduler reads back from the store must mean the same as what was sent.
    stored = configuration_from_stored(conf.model_dump(mode="json"))
    assert pod_requests(request_for(conf)) == expected
    assert pod_requests(request_for(stored)) == expected


def test_the_pod_requests_ephemeral_storage_only_when_the_run_sets_a_disk() -> None:
    plain = _objects("type: task\nimage: x", PodContext(default_image="i"))
    assert "ephemeral-storage" not in plain["spec"]["containers"][0]["resources"]["requests"]
    sized = _objects("type: task\nimage: x\nresources: {disk: 200GB..}", PodContext("i"))
    requests = sized["spec"]["containers"][0]["resources"]["requests"]
    assert requests["ephemeral-storage"] == str(200 * 2**30)


@pytest.mark.parametrize(
    ("memory", "limit"),
    [
        ("8GB..", None),  # no ceiling: the pod may use what the node has
        ("16GB", str(16 * 2**30)),  # exact: requested and held to it
        ("8GB..16GB", str(16 * 2**30)),  # the upper bound is the ceiling
        ("0.0625GB", str(64 * 2**20)),
    ],
)
def test_a_memory_range_with_an_upper_bound_becomes_the_pods_memory_limit(
    memory: str, limit: str | None
) -> None:
    pod = _objects(f"type: task\nimage: x\nresources: {{memory: {memory}}}", PodContext("i"))
    limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
    assert limits.get("memory") == limit
