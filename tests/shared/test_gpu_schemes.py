"""GPU identity from the labels managed clusters write instead of GFD's.

Label values as each provider documents them:

* GKE: https://cloud.google.com/kubernetes-engine/docs/how-to/gpus (accelerator
  names such as ``nvidia-l4``, ``nvidia-tesla-a100``, ``nvidia-h100-mega-80gb``),
  the multi-instance GPU guide (``gke-gpu-partition-size``) and the time-sharing
  guide (``gke-gpu-sharing-strategy``, ``gke-max-shared-clients-per-gpu``).
* Karpenter well-known labels: https://karpenter.sh/docs/concepts/scheduling/
  (``instance-gpu-name: t4``, ``instance-gpu-memory`` in MiB from EC2's GpuInfo).
* CoreWeave node types: ``gpu.nvidia.com/class`` values such as ``H100_NVLINK_80GB``.
* Instance types from the AWS, Google Cloud and Azure GPU size tables.
"""

from __future__ import annotations

import json
import logging

import pytest

from shared.configuration import parse_run_configuration
from shared.gpu.catalogue import GpuVendor, derive_name, lookup_product, nominal_memory_gib
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup, node_gpus
from shared.gpu.schemes.instance_types import instance_gpus
from shared.placement.offers import match, nominal_memory_mib
from shared.placement.requests import request_for

GKE = "cloud.google.com/gke-accelerator"
KARPENTER_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
KARPENTER_COUNT = "karpenter.k8s.aws/instance-gpu-count"
KARPENTER_MAKER = "karpenter.k8s.aws/instance-gpu-manufacturer"
COREWEAVE = "gpu.nvidia.com/class"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"


def _karpenter(name: str, memory: str, count: str) -> dict[str, str]:
    return {
        KARPENTER_NAME: name,
        KARPENTER_MEMORY: memory,
        KARPENTER_COUNT: count,
        KARPENTER_MAKER: "nvidia",
        "karpenter.sh/capacity-type": "on-demand",
    }


# --- each scheme ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "gpus", "name", "memory_gb", "scheme"),
    [
        ({GKE: "nvidia-l4", "cloud.google.com/gke-accelerator-count": "1"}, 1, "L4", 24, "gke"),
        ({GKE: "nvidia-tesla-a100"}, 8, "A100", 40, "gke"),
        ({GKE: "nvidia-a100-80gb"}, 8, "A100", 80, "gke"),
        ({GKE: "nvidia-h100-80gb"}, 8, "H100", 80, "gke"),
        ({GKE: "nvidia-h100-mega-80gb"}, 8, "H100", 80, "gke"),
        ({GKE: "nvidia-tesla-t4"}, 4, "T4", 16, "gke"),
        ({GKE: "nvidia-tesla-v100"}, 8, "V100", 16, "gke"),
        ({GKE: "nvidia-tesla-p100"}, 1, "P100", 12, "gke"),
        ({GKE: "nvidia-b200"}, 8, "B200", 180, "gke"),
        (_karpenter("l40s", "49152", "4"), 4, "L40S", 48, "karpenter"),
        (_karpenter("a10g", "24576", "1"), 1, "A10G", 24, "karpenter"),
        (_karpenter("h100", "81920", "8"), 8, "H100", 80, "karpenter"),
        (_karpenter("t4", "16384", "1"), 1, "T4", 16, "karpenter"),
        (_karpenter("l4", "22888", "1"), 1, "L4", 24, "karpenter"),
        (_karpenter("a100", "81920", "8"), 8, "A100", 80, "karpenter"),  # p4de
        (_karpenter("v100", "32768", "8"), 8, "V100", 32, "karpenter"),  # p3dn
        ({COREWEAVE: "H100_NVLINK_80GB"}, 8, "H100", 80, "coreweave"),
        ({COREWEAVE: "A100_PCIE_40GB"}, 8, "A100", 40, "coreweave"),
        ({COREWEAVE: "A100_NVLINK_80GB"}, 8, "A100", 80, "coreweave"),
        ({COREWEAVE: "RTX_A6000"}, 8, "A6000", 48, "coreweave"),
        ({COREWEAVE: "A40"}, 8, "A40", 48, "coreweave"),
        ({COREWEAVE: "L40S"}, 8, "L40S", 48, "coreweave"),
        ({COREWEAVE: "GH200_480GB"}, 1, "GH200", 96, "coreweave"),
        ({INSTANCE_TYPE: "p4d.24xlarge"}, 8, "A100", 40, "instance-type"),
        ({INSTANCE_TYPE: "p4de.24xlarge"}, 8, "A100", 80, "instance-type"),
        ({INSTANCE_TYPE: "p5.48xlarge"}, 8, "H100", 80, "instance-type"),
        ({INSTANCE_TYPE: "p5e.48xlarge"}, 8, "H200", 141, "instance-type"),
        ({INSTANCE_TYPE: "g5.12xlarge"}, 4, "A10G", 24, "instance-type"),
        ({INSTANCE_TYPE: "g6e.xlarge"}, 1, "L40S", 48, "instance-type"),
        ({INSTANCE_TYPE: "a2-ultragpu-8g"}, 8, "A100", 80, "instance-type"),
        ({INSTANCE_TYPE: "g2-standard-24"}, 2, "L4", 24, "instance-type"),
        ({INSTANCE_TYPE: "Standard_ND96isr_H100_v5"}, 8, "H100", 80, "instance-type"),
        ({INSTANCE_TYPE: "Standard_NC24ads_A100_v4"}, 1, "A100", 80, "instance-type"),
        ({"beta.kubernetes.io/instance-type": "g4dn.xlarge"}, 1, "T4", 16, "instance-type"),
    ],
)
def test_each_scheme_names_the_gpu_its_labels_describe(
    labels: dict[str, str], gpus: int, name: str, memory_gb: int, scheme: str
) -> None:
    (group,) = node_gpus(labels, {"cpu": "8", "nvidia.com/gpu": str(gpus)}).groups
    assert (group.vendor, group.resource, group.count) == (GpuVendor.NVIDIA, "nvidia.com/gpu", gpus)
    assert (group.name, group.known, group.scheme) == (name, True, scheme)
    assert nominal_memory_mib(group) == memory_gb * 1024


@pytest.mark.parametrize(
    ("instance_type", "name", "memory_gib", "count"),
    [
        ("g5.xlarge", "A10G", 24, 1),
        ("g5.12xlarge", "A10G", 24, 4),
        ("g5.48xlarge", "A10G", 24, 8),
        ("g6.24xlarge", "L4", 24, 4),
        ("g6e.48xlarge", "L40S", 48, 8),
        ("g4dn.12xlarge", "T4", 16, 4),
        ("g4dn.metal", "T4", 16, 8),
        ("p3.8xlarge", "V100", 16, 4),
        ("p3.16xlarge", "V100", 16, 8),
        ("a2-highgpu-4g", "A100", 40, 4),
        ("a3-highgpu-8g", "H100", 80, 8),
        ("g2-standard-96", "L4", 24, 8),
        ("Standard_ND96asr_v4", "A100", 40, 8),
        ("standard_nd96amsr_a100_v4", "A100", 80, 8),
        ("Standard_NV36ads_A10_v5", "A10", 24, 1),
        ("Standard_NC4as_T4_v3", "T4", 16, 1),
    ],
)
def test_instance_types_list_the_documented_gpu_count_per_size(
    instance_type: str, name: str, memory_gib: int, count: int
) -> None:
    gpus = instance_gpus(instance_type)
    assert gpus is not None
    assert (gpus.name, gpus.memory_gib, gpus.count) == (name, memory_gib, count)


@pytest.mark.parametrize("instance_type", ["m5.large", "g5", "Standard_NV6ads_A10_v5", ""])
def test_cpu_or_fractional_instance_types_are_not_listed(instance_type: str) -> None:
    assert instance_gpus(instance_type) is None


def test_gke_mig_partitions_are_counted_as_slices_of_that_profile() -> None:
    labels = {GKE: "nvidia-tesla-a100", "cloud.google.com/gke-gpu-partition-size": "1g.5gb"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "7"}).groups
    assert (group.name, group.mig_profile, group.count, group.memory_mib) == (
        "A100",
        "1g.5gb",
        7,
        5 * 1024,
    )
    assert nominal_memory_mib(group) == 5 * 1024


def test_gke_time_sharing_marks_the_group_shared_with_its_clients_per_gpu() -> None:
    labels = {
        GKE: "nvidia-l4",
        "cloud.google.com/gke-gpu-sharing-strategy": "time-sharing",
        "cloud.google.com/gke-max-shared-clients-per-gpu": "3",
    }
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "3"}).groups
    assert (group.shared, group.replicas, group.devices) == (True, 3, 1)


def test_a_karpenter_node_of_another_manufacturer_is_not_read_as_nvidia() -> None:
    labels = {**_karpenter("radeon pro v520", "8192", "1"), KARPENTER_MAKER: "amd"}
    assert node_gpus(labels, {"cpu": "4"}).groups == ()


def test_scheme_labels_without_the_device_plugin_keep_the_group_at_zero() -> None:
    (group,) = node_gpus({GKE: "nvidia-l4"}, {"cpu": "4"}).groups
    assert (group.name, group.count, group.scheme) == ("L4", 0, "gke")


# --- precedence ----------------------------------------------------------------------


def test_gfd_labels_win_over_gke_labels() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", GKE: "nvidia-l4"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (group.name, group.scheme, group.product) == ("H100", "gfd", "NVIDIA-H100-80GB-HBM3")


@pytest.mark.parametrize(
    ("labels", "scheme", "name"),
    [
        ({GKE: "nvidia-l4", COREWEAVE: "A40", INSTANCE_TYPE: "p5.48xlarge"}, "gke", "L4"),
        ({**_karpenter("l40s", "49152", "1"), COREWEAVE: "A40"}, "karpenter", "L40S"),
        ({**_karpenter("l40s", "49152", "1"), INSTANCE_TYPE: "g5.xlarge"}, "karpenter", "L40S"),
        ({COREWEAVE: "A40", INSTANCE_TYPE: "p5.48xlarge"}, "coreweave", "A40"),
        (
            {INSTANCE_TYPE: "m5.large", "beta.kubernetes.io/instance-type": "g6.xlarge"},
            "instance-type",
            "L4",
        ),
    ],
)
def test_conflicting_schemes_take_the_first_in_precedence(
    labels: dict[str, str], scheme: str, name: str
) -> None:
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert (group.scheme, group.name) == (scheme, name)


def test_a_bare_device_plugin_node_says_no_scheme_named_it() -> None:
    (group,) = node_gpus({INSTANCE_TYPE: "m5.large"}, {"nvidia.com/gpu": "1"}).groups
    assert (group.scheme, group.name, group.known) == ("device-plugin", None, False)


# --- unknown values and bad labels --------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "product", "name", "memory_mib"),
    [
        ({GKE: "nvidia-b300"}, "nvidia-b300", "B300", None),
        ({GKE: "nvidia-tesla-k80"}, "nvidia-tesla-k80", "K80", None),
        ({COREWEAVE: "Quadro_RTX_5000"}, "Quadro_RTX_5000", "RTX5000", None),
        ({COREWEAVE: "B300_SXM_288GB"}, "B300_SXM_288GB", "B300", 288 * 1024),
        (_karpenter("b300", "275040", "8"), "b300-288gb", "B300", 275040),
    ],
)
def test_an_unknown_value_still_yields_a_counted_group_named_from_the_label(
    labels: dict[str, str], product: str, name: str, memory_mib: int | None
) -> None:
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (group.count, group.product, group.name, group.known, group.memory_mib) == (
        8,
        product,
        name,
        False,
        memory_mib,
    )


@pytest.mark.parametrize("memory", ["lots", "", "-1", "0", "48Gi"])
def test_a_memory_label_that_is_not_a_number_is_ignored(memory: str) -> None:
    labels = {**_karpenter("l40s", memory, "1")}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert (group.name, group.memory_mib) == ("L40S", 48 * 1024)


def test_a_malformed_gke_partition_size_keeps_whole_gpus() -> None:
    labels = {GKE: "nvidia-l4", "cloud.google.com/gke-gpu-partition-size": "half"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert (group.mig_profile, group.memory_mib) == (None, 24 * 1024)


def test_a_disagreement_between_schemes_is_logged_once_not_per_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", GKE: "nvidia-tesla-t4"}
    with caplog.at_level(logging.WARNING, logger="shared.gpu.labels"):
        for _ in range(5):  # five inventory passes over the same node
            (group,) = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (group.name, group.scheme) == ("H100", "gfd")
    conflicts = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert len(conflicts) == 1
    assert "NVIDIA-H100-80GB-HBM3" in conflicts[0] and "nvidia-tesla-t4" in conflicts[0]


def test_schemes_spelling_the_same_gpu_differently_do_not_disagree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-L4",
        GKE: "nvidia-l4",
        INSTANCE_TYPE: "g2-standard-8",
    }
    with caplog.at_level(logging.WARNING, logger="shared.gpu.labels"):
        (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert group.scheme == "gfd"
    assert not [r for r in caplog.records if "disagree" in r.getMessage()]


def test_a_gfd_memory_label_that_is_not_a_number_is_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.memory": "46068MiB"}
    with caplog.at_level(logging.WARNING, logger="shared.gpu.labels"):
        for _ in range(3):
            (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert (group.name, group.memory_mib) == ("L40S", 48 * 1024)
    warnings = [r.getMessage() for r in caplog.records if "46068MiB" in r.getMessage()]
    assert len(warnings) == 1 and "nvidia.com/gpu.memory" in warnings[0]


@pytest.mark.parametrize(
    ("product", "measured_mib", "gpu", "name"),
    [
        ("NVIDIA-H20", "97871", "H20:96GB", "H20"),
        ("NVIDIA-L20", "46068", "L20:48GB", "L20"),
        ("NVIDIA-B300-SXM6-AC", "275040", "B300:288GB", "B300"),
        ("NVIDIA-H20", "97871", "96GB..", "H20"),
    ],
)
def test_a_gfd_product_the_catalogue_lacks_is_requestable_by_name_and_nominal_memory(
    product: str, measured_mib: str, gpu: str, name: str
) -> None:
    labels = {"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": measured_mib}
    groups = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (groups[0].name, groups[0].known, groups[0].scheme) == (name, False, "gfd")
    conf = parse_run_configuration(f"type: task\nimage: x\nresources: {{gpu: '{gpu}'}}")
    assert [o.node for o in match(_inventory(groups), request_for(conf)).offers] == ["gpu-1"]


# --- names and memory of products the catalogue lacked -------------------------------


@pytest.mark.parametrize(
    ("product", "measured_mib", "name", "memory_gib"),
    [
        ("NVIDIA-H800", "81559", "H800", 80),
        ("NVIDIA-RTX-4000-Ada-Generation", "20475", "RTX4000Ada", 20),
        ("NVIDIA-RTX-4000-SFF-Ada-Generation", "20475", "RTX4000Ada", 20),
        ("NVIDIA-A800-SXM4-80GB", "81920", "A800", 80),
    ],
)
def test_gfd_products_are_requestable_by_the_name_users_write(
    product: str, measured_mib: str, name: str, memory_gib: int
) -> None:
    model = lookup_product(product)
    assert model is not None
    assert (model.name, model.memory_gib) == (name, memory_gib)
    conf = parse_run_configuration(
        f"type: task\nimage: x\nresources: {{gpu: {name}:{memory_gib}GB}}"
    )
    labels = {"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": measured_mib}
    assert match(
        _inventory(node_gpus(labels, {"nvidia.com/gpu": "1"}).groups), request_for(conf)
    ).offers


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("nvidia-b300", "B300"),
        ("NVIDIA-B300-SXM6-AC", "B300"),
        ("Quadro_RTX_5000", "RTX5000"),
        ("NVIDIA-RTX-2000-Ada-Generation", "RTX2000ADA"),
        ("NVIDIA", None),
        ("", None),
    ],
)
def test_derived_names_keep_the_model_tokens_only(product: str, expected: str | None) -> None:
    assert derive_name(product) == expected


@pytest.mark.parametrize(
    ("memory_mib", "gib"),
    [
        (81559, 80),
        (23034, 24),
        (40960, 40),
        (97871, 96),
        (143771, 141),
        (46068, 48),  # L40S
        (15360, 16),  # T4
        (95830, 94),  # H100 NVL
        (183359, 180),  # B200
        (275040, 288),  # B300
        (81920, 80),
        (3000, 3),  # no one sells a 4GB part this small: plain rounding
        (600_000, 586),  # larger than any listed size
    ],
)
def test_measured_memory_maps_to_the_nominal_size_vendors_sell(memory_mib: int, gib: int) -> None:
    assert nominal_memory_gib(memory_mib) == gib


# --- stored inventories --------------------------------------------------------------


def test_stored_inventory_json_without_scheme_still_loads() -> None:
    stored = {
        "nodes": [
            {
                "name": "gpu-1",
                "gpus": [
                    {"vendor": "nvidia", "resource": "nvidia.com/gpu", "count": 8, "name": "H100"},
                    {"vendor": "amd", "resource": "amd.com/gpu", "count": 8, "name": "MI300X"},
                    {"vendor": "intel", "resource": "habana.ai/gaudi", "count": 8},
                ],
            }
        ]
    }
    inventory = GpuInventory.model_validate_json(json.dumps(stored))
    node = inventory.node("gpu-1")
    assert node is not None
    assert [g.scheme for g in node.gpus] == ["gfd", "amd", "gaudi"]


def test_the_scheme_survives_a_json_round_trip() -> None:
    groups = node_gpus({COREWEAVE: "A40"}, {"nvidia.com/gpu": "8"}).groups
    inventory = _inventory(groups)
    assert GpuInventory.from_json(inventory.to_json()) == inventory
    bare = _inventory(node_gpus({}, {"nvidia.com/gpu": "1"}).groups)
    assert GpuInventory.from_json(bare.to_json()) == bare


def test_a_group_built_by_hand_defaults_its_scheme_from_the_vendor() -> None:
    group = GpuGroup(vendor=GpuVendor.NVIDIA, resource="nvidia.com/gpu", count=1)
    assert group.scheme == "gfd"


# --- through the matcher -------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "labels"),
    [
        ("L4", {GKE: "nvidia-l4", "cloud.google.com/gke-accelerator-count": "1"}),
        ("L4:24GB", {GKE: "nvidia-l4"}),
        ("L40S", _karpenter("l40s", "49152", "1")),
        ("L40S:48GB", _karpenter("l40s", "45776", "1")),
        ("A100:80GB", _karpenter("a100", "81920", "1")),
        ("H100", {COREWEAVE: "H100_NVLINK_80GB"}),
        ("H100:80GB", {COREWEAVE: "H100_NVLINK_80GB"}),
        ("A10G", {INSTANCE_TYPE: "g5.xlarge"}),
        ("B300", {GKE: "nvidia-b300"}),
    ],
)
def test_a_run_asking_for_a_model_matches_a_node_named_by_a_managed_scheme(
    gpu: str, labels: dict[str, str]
) -> None:
    conf = parse_run_configuration(f"type: task\nimage: x\nresources: {{gpu: '{gpu}'}}")
    inventory = _inventory(node_gpus(labels, {"nvidia.com/gpu": "1"}).groups)
    verdict = match(inventory, request_for(conf))
    assert [o.node for o in verdict.offers] == ["gpu-1"]


@pytest.mark.parametrize(
    ("gpu", "labels"),
    [
        ("L4", {GKE: "nvidia-l40s"}),
        ("L40S", {GKE: "nvidia-l4"}),
        ("A100:80GB", {GKE: "nvidia-tesla-a100"}),
        ("H100", {COREWEAVE: "H100_NVLINK_80GB", GKE: "nvidia-l4"}),
    ],
)
def test_a_run_does_not_match_a_managed_node_of_another_model(
    gpu: str, labels: dict[str, str]
) -> None:
    conf = parse_run_configuration(f"type: task\nimage: x\nresources: {{gpu: '{gpu}'}}")
    inventory = _inventory(node_gpus(labels, {"nvidia.com/gpu": "1"}).groups)
    assert match(inventory, request_for(conf)).offers == []


def _inventory(groups: tuple[GpuGroup, ...]) -> GpuInventory:
    resources = Resources(
        cpu_millicores=8000,
        memory_bytes=64 * 2**30,
        ephemeral_storage_bytes=200 * 2**30,
        gpus={g.resource: g.count for g in groups},
    )
    node = NodeInventory(name="gpu-1", gpus=groups, allocatable=resources, free=resources)
    return GpuInventory(nodes=(node,))


# --- nodes whose GPUs no label names -------------------------------------------------


def test_a_request_only_an_unnamed_gpu_could_meet_names_the_node_and_the_fix() -> None:
    conf = parse_run_configuration("type: task\nimage: x\nresources: {gpu: 'H100:2'}")
    inventory = _inventory(node_gpus({}, {"nvidia.com/gpu": "8"}).groups)
    verdict = match(inventory, request_for(conf))
    assert not verdict.possible
    assert verdict.reason.startswith("impossible: 2x H100")
    assert "gpu-1" in verdict.reason and "nvidia.com/gpu.product=" in verdict.reason


def test_an_unnamed_gpu_too_small_for_the_count_is_not_blamed() -> None:
    conf = parse_run_configuration("type: task\nimage: x\nresources: {gpu: 'H100:8'}")
    inventory = _inventory(node_gpus({}, {"nvidia.com/gpu": "2"}).groups)
    verdict = match(inventory, request_for(conf))
    assert verdict.reason.startswith("impossible: 8x H100")
    assert "no label names" not in verdict.reason


def test_unidentified_gpus_lists_only_advertised_groups_without_a_name() -> None:
    from shared.gpu.unidentified import unidentified_gpus

    bare = _inventory(node_gpus({}, {"nvidia.com/gpu": "4"}).groups)
    named = _inventory(node_gpus({GKE: "nvidia-l4"}, {"nvidia.com/gpu": "4"}).groups)
    (entry,) = unidentified_gpus(bare)
    assert (entry.node, entry.resource, entry.count) == ("gpu-1", "nvidia.com/gpu", 4)
    assert unidentified_gpus(named) == []
