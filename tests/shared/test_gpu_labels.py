"""GPU catalogue and node-label parsing, with label values as the labellers write them.

Sources of the label values used below:

* GFD README, "Verifying Everything Works" and "Generated Labels" (incl. the MIG
  single/mixed tables):
  https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md
* GPU Operator MIG guide (H100 node with mig.strategy=single, sharing-strategy none).
* NVIDIA device plugin e2e test for time-slicing (product ``Tesla-T4-SHARED`` and
  ``nvidia.com/gpu.replicas``), and its README on ``renameByDefault`` (resource
  ``nvidia.com/gpu.shared``).
* ROCm node labeller README and main.go (``beta.amd.com/gpu.device-id.6860=1``,
  ``beta.amd.com/gpu.vram.16G=1``; VRAM written as whole GiB with a ``G``), and
  the current unprefixed labels (``amd.com/gpu.product-name=AMD_Instinct_MI300X_OAM``,
  ``amd.com/gpu.vram=192G``).
"""

from __future__ import annotations

import pytest

from shared.gpu.catalogue import (
    GpuVendor,
    lookup_amd_device_id,
    lookup_product,
    parse_mig_profile,
    split_product,
)
from shared.gpu.labels import GpuGroup, is_gpu_resource, node_gpus

# --- catalogue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "name", "memory_gib"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100", 80),
        ("NVIDIA-H100-PCIe", "H100", 80),
        ("NVIDIA-H100-NVL", "H100NVL", 94),
        ("NVIDIA-H200", "H200", 141),
        ("NVIDIA-A100-SXM4-80GB", "A100", 80),
        ("NVIDIA-A100-SXM4-40GB", "A100", 40),
        ("NVIDIA-A100-PCIE-40GB", "A100", 40),
        ("NVIDIA-A100-80GB-PCIe", "A100", 80),
        ("A100-SXM4-40GB", "A100", 40),  # GFD before the "NVIDIA-" prefix
        ("NVIDIA-A10G", "A10G", 24),
        ("NVIDIA-A10", "A10", 24),
        ("NVIDIA-L4", "L4", 24),
        ("NVIDIA-L40S", "L40S", 48),
        ("Tesla-T4", "T4", 16),
        ("Tesla-V100-SXM2-16GB", "V100", 16),
        ("Tesla-V100-PCIE-32GB", "V100", 32),
        ("NVIDIA-GeForce-RTX-4090", "RTX4090", 24),
        ("NVIDIA-RTX-A6000", "A6000", 48),
        ("NVIDIA-RTX-6000-Ada-Generation", "RTX6000Ada", 48),
        ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "RTXPRO6000", 96),
        ("MI300X", "MI300X", 192),
        ("AMD_Instinct_MI300X_OAM", "MI300X", 192),
        ("AMD Instinct MI210", "MI210", 64),
        ("MI250X", "MI250X", 64),
        ("MI325X", "MI325X", 256),
        ("HL-225", "Gaudi2", 96),
        ("Gaudi3", "Gaudi3", 128),
    ],
)
def test_known_products_map_to_their_short_name_and_memory(
    product: str, name: str, memory_gib: int
) -> None:
    model = lookup_product(product)
    assert model is not None
    assert (model.name, model.memory_gib) == (name, memory_gib)


@pytest.mark.parametrize(
    "product",
    [
        "nvidia-h100-80gb-hbm3",
        "NVIDIA_H100_80GB_HBM3",
        "NVIDIA H100 80GB HBM3",
        "NVIDIA-H100-80GB-HBM3-SHARED",
        "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
        "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb-SHARED",
        " NVIDIA-H100-80GB-HBM3 ",
    ],
)
def test_case_separators_and_gfd_suffixes_do_not_change_the_match(product: str) -> None:
    model = lookup_product(product)
    assert model is not None
    assert model.name == "H100"


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-L40", "L40"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-T400", None),  # a real low-end card, not a T4
        ("NVIDIA-A10", "A10"),
        ("NVIDIA-A100-SXM4-40GB", "A100"),
        ("NVIDIA-A16", "A16"),
    ],
)
def test_names_match_whole_tokens_not_prefixes(product: str, expected: str | None) -> None:
    model = lookup_product(product)
    assert (model.name if model else None) == expected


@pytest.mark.parametrize(
    "product", ["", "SHARED", "NVIDIA", "Tesla-V100S-PCIE-32GB", "NVIDIA-B300", "MI999X"]
)
def test_unknown_products_give_none(product: str) -> None:
    assert lookup_product(product) is None


def test_a_memory_token_that_is_not_a_known_size_is_ignored() -> None:
    # GH200-480GB is the superchip's CPU+GPU memory; the GPU itself has 96 GB.
    model = lookup_product("NVIDIA-GH200-480GB")
    assert model is not None
    assert model.memory_gib == 96


@pytest.mark.parametrize(
    ("device_id", "name"),
    [
        ("74a1", "MI300X"),
        ("0x74A1", "MI300X"),
        ("740f", "MI210"),
        ("7408", "MI250X"),
        ("74a5", "MI325X"),
        ("74b5", "MI300X"),  # the SR-IOV virtual function
        ("74a0", "MI300A"),
    ],
)
def test_amd_pci_device_ids_map_to_models(device_id: str, name: str) -> None:
    model = lookup_amd_device_id(device_id)
    assert model is not None
    assert (model.name, model.vendor) == (name, GpuVendor.AMD)


def test_an_unknown_amd_device_id_gives_none() -> None:
    assert lookup_amd_device_id("6860") is None  # Vega 10 (MI25) from the labeller README


def test_split_product_separates_the_shared_and_mig_suffixes() -> None:
    name = split_product("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED")
    assert name.base == "NVIDIA-A100-SXM4-40GB"
    assert name.shared
    assert name.mig is not None
    assert (name.mig.name, name.mig.slices, name.mig.memory_gb) == ("1g.5gb", 1, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1g.10gb", "1g.10gb"), ("mig-3g.40gb", "3g.40gb"), ("1g.10gb+me", "1g.10gb+me")],
)
def test_mig_profiles_are_read_from_names_and_resources(text: str, expected: str) -> None:
    profile = parse_mig_profile(text)
    assert profile is not None
    assert profile.name == expected


def test_text_without_a_mig_profile_is_not_one() -> None:
    assert parse_mig_profile("nvidia.com/gpu") is None


# --- NVIDIA labels ---------------------------------------------------------------------


def test_a_plain_nvidia_node_reads_product_count_and_memory_from_gfd_labels() -> None:
    # The README's "Verifying Everything Works" example node.
    labels = {
        "nvidia.com/cuda.driver.major": "455",
        "nvidia.com/gpu.compute.major": "8",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.memory": "39538",
        "nvidia.com/gpu.product": "A100-SXM4-40GB",
    }
    gpus = node_gpus(labels, {"cpu": "8", "nvidia.com/gpu": "1"})
    assert gpus.vendor == GpuVendor.NVIDIA
    assert gpus.groups == (
        GpuGroup(
            vendor=GpuVendor.NVIDIA,
            resource="nvidia.com/gpu",
            count=1,
            product="A100-SXM4-40GB",
            name="A100",
            known=True,
            memory_mib=39538,
        ),
    )


def test_without_a_memory_label_memory_comes_from_the_catalogue() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "single",
    }
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (group.name, group.count, group.memory_mib) == ("H100", 8, 80 * 1024)
    assert not group.shared
    assert group.mig_profile is None


def test_mig_single_strategy_counts_mig_devices_and_uses_the_slice_memory() -> None:
    # The README's single-strategy table: 8 A100s cut into 7 slices each.
    labels = {
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb",
        "nvidia.com/gpu.count": "56",
        "nvidia.com/gpu.memory": "5120",
        "nvidia.com/gpu.multiprocessors": "14",
        "nvidia.com/gpu.slices.gi": "1",
        "nvidia.com/gpu.slices.ci": "1",
    }
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "56"}).groups
    assert group.resource == "nvidia.com/gpu"
    assert (group.name, group.mig_profile, group.count, group.memory_mib) == (
        "A100",
        "1g.5gb",
        56,
        5120,
    )


def test_mig_single_strategy_without_a_memory_label_uses_the_profile_size() -> None:
    labels = {
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
    }
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "56"}).groups
    assert group.memory_mib == 10 * 1024


def test_mig_mixed_strategy_gives_one_group_per_profile() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/gpu.memory": "40960",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig-1g.5gb.count": "3",
        "nvidia.com/mig-1g.5gb.memory": "4864",
        "nvidia.com/mig-2g.10gb.count": "2",
        "nvidia.com/mig-2g.10gb.memory": "10240",
        "nvidia.com/mig-2g.10gb.multiprocessors": "28",
    }
    allocatable = {
        "nvidia.com/gpu": "0",
        "nvidia.com/mig-1g.5gb": "3",
        "nvidia.com/mig-2g.10gb": "2",
    }
    groups = node_gpus(labels, allocatable).groups
    assert [(g.resource, g.mig_profile, g.count, g.memory_mib) for g in groups] == [
        ("nvidia.com/mig-1g.5gb", "1g.5gb", 3, 4864),
        ("nvidia.com/mig-2g.10gb", "2g.10gb", 2, 10240),
    ]
    assert all(g.name == "A100" and g.known for g in groups)


def test_mig_mixed_strategy_keeps_whole_gpus_as_their_own_group() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.memory": "81920",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig-3g.40gb.count": "2",
    }
    allocatable = {"nvidia.com/gpu": "7", "nvidia.com/mig-3g.40gb": "2"}
    groups = {g.resource: g for g in node_gpus(labels, allocatable).groups}
    assert groups["nvidia.com/gpu"].count == 7
    assert groups["nvidia.com/gpu"].memory_mib == 81920
    assert groups["nvidia.com/mig-3g.40gb"].memory_mib == 40 * 1024


def test_time_slicing_marks_the_group_shared_with_its_replicas() -> None:
    labels = {
        "nvidia.com/gpu.product": "Tesla-T4-SHARED",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.replicas": "4",
        "nvidia.com/gpu.memory": "15360",
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
    }
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "4"}).groups
    assert (group.name, group.shared, group.replicas, group.count, group.devices) == (
        "T4",
        True,
        4,
        4,
        1,
    )
    assert group.product == "Tesla-T4-SHARED"


def test_time_slicing_with_rename_by_default_uses_the_shared_resource() -> None:
    labels = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.replicas": "10"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu.shared": "10"}).groups
    assert (group.resource, group.shared, group.replicas) == ("nvidia.com/gpu.shared", True, 10)


def test_a_device_plugin_without_gfd_gives_an_unnamed_group() -> None:
    (group,) = node_gpus({}, {"nvidia.com/gpu": "8"}).groups
    assert (group.vendor, group.count, group.product, group.known) == (
        GpuVendor.NVIDIA,
        8,
        None,
        False,
    )


def test_gfd_labels_without_allocatable_gpus_keep_the_group_at_zero() -> None:
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-L4"}
    (group,) = node_gpus(labels, {"cpu": "4"}).groups
    assert (group.name, group.count) == ("L4", 0)


def test_an_unknown_nvidia_product_gets_the_name_its_label_spells() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-B300-SXM6-AC", "nvidia.com/gpu.memory": "275040"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "8"}).groups
    assert (group.product, group.name, group.known, group.memory_mib, group.scheme) == (
        "NVIDIA-B300-SXM6-AC",
        "B300",
        False,
        275040,
        "gfd",
    )


def test_a_node_without_accelerators_has_no_groups() -> None:
    labels = {"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m5.large"}
    gpus = node_gpus(labels, {"cpu": "2", "memory": "7901Mi", "pods": "29"})
    assert gpus.groups == ()
    assert gpus.vendor == GpuVendor.NONE
    assert gpus.count == 0


def test_a_malformed_memory_label_falls_back_to_the_catalogue() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "lots"}
    (group,) = node_gpus(labels, {"nvidia.com/gpu": "1"}).groups
    assert group.memory_mib == 24 * 1024


# --- AMD labels ------------------------------------------------------------------------


def test_amd_current_labels_give_product_and_vram() -> None:
    labels = {
        "amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM",
        "amd.com/gpu.device-id": "74a1",
        "amd.com/gpu.vram": "192G",
        "amd.com/gpu.family": "AI",
    }
    (group,) = node_gpus(labels, {"amd.com/gpu": "8"}).groups
    assert group == GpuGroup(
        vendor=GpuVendor.AMD,
        resource="amd.com/gpu",
        count=8,
        product="AMD_Instinct_MI300X_OAM",
        name="MI300X",
        known=True,
        memory_mib=192 * 1024,
    )


def test_amd_beta_key_encoded_labels_are_read_from_the_keys() -> None:
    labels = {
        "beta.amd.com/gpu.device-id.74a1": "8",
        "beta.amd.com/gpu.vram.192G": "8",
        "beta.amd.com/gpu.family.AI": "8",
        "beta.amd.com/gpu.cu-count.304": "8",
    }
    (group,) = node_gpus(labels, {"amd.com/gpu": "8"}).groups
    assert (group.name, group.product, group.memory_mib) == ("MI300X", "74a1", 192 * 1024)


def test_amd_device_id_alone_takes_memory_from_the_catalogue() -> None:
    (group,) = node_gpus({"amd.com/gpu.device-id": "740f"}, {"amd.com/gpu": "4"}).groups
    assert (group.name, group.memory_mib) == ("MI210", 64 * 1024)


def test_an_unknown_amd_device_is_kept_with_its_id_and_vram() -> None:
    # The labeller README's example node (a Vega 10 card).
    labels = {
        "beta.amd.com/gpu.cu-count.64": "1",
        "beta.amd.com/gpu.device-id.6860": "1",
        "beta.amd.com/gpu.family.AI": "1",
        "beta.amd.com/gpu.simd-count.256": "1",
        "beta.amd.com/gpu.vram.16G": "1",
    }
    (group,) = node_gpus(labels, {"amd.com/gpu": "1"}).groups
    assert (group.product, group.known, group.name, group.memory_mib) == (
        "6860",
        False,
        None,
        16 * 1024,
    )


def test_a_node_mixing_two_amd_models_is_not_named_after_either() -> None:
    labels = {"beta.amd.com/gpu.device-id.74a1": "4", "beta.amd.com/gpu.device-id.740f": "4"}
    (group,) = node_gpus(labels, {"amd.com/gpu": "8"}).groups
    assert (group.known, group.name) == (False, None)


def test_two_ids_of_the_same_amd_model_still_name_it() -> None:
    labels = {"beta.amd.com/gpu.device-id.74a1": "4", "beta.amd.com/gpu.device-id.74b5": "4"}
    (group,) = node_gpus(labels, {"amd.com/gpu": "8"}).groups
    assert group.name == "MI300X"


# --- Intel Gaudi -----------------------------------------------------------------------


def test_gaudi_nodes_default_to_gaudi2() -> None:
    (group,) = node_gpus({}, {"habana.ai/gaudi": "8"}).groups
    assert (group.vendor, group.resource, group.count, group.name, group.memory_mib) == (
        GpuVendor.INTEL,
        "habana.ai/gaudi",
        8,
        "Gaudi2",
        96 * 1024,
    )


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/gpu.shared", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("amd.com/gpu", True),
        ("habana.ai/gaudi", True),
        ("cpu", False),
        ("hugepages-2Mi", False),
        ("rdma/hca", False),
    ],
)
def test_gpu_resources_are_recognised_by_name(resource: str, expected: bool) -> None:
    assert is_gpu_resource(resource) is expected
