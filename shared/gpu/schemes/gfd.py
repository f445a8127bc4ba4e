"""NVIDIA GPU Feature Discovery's labels → :class:`GpuIdentity`: the first scheme read.

GFD (part of the GPU Operator and of the NVIDIA device plugin's chart) writes
``nvidia.com/gpu.product`` from the driver's own product name and
``nvidia.com/gpu.memory`` as the MiB the driver reports, so it is the most exact
source a node can carry and wins over every managed-cluster label.
https://github.com/NVIDIA/k8s-device-plugin/blob/main/docs/gpu-feature-discovery/README.md

A product the catalogue does not know still gets a short name derived from the
label (``NVIDIA-H800`` → ``H800``), so ``gpu: H800`` can request it before the
catalogue lists it; its memory then comes from the memory label alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.gpu.catalogue import derive_name, lookup_product, split_product
from shared.gpu.schemes.identity import SCHEME_GFD, GpuIdentity, positive_int
from shared.gpu.schemes.notices import warn_once

__all__ = ["GFD_MEMORY_LABEL", "GFD_PRODUCT_LABEL", "read_gfd"]

GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"
GFD_MEMORY_LABEL = "nvidia.com/gpu.memory"


def read_gfd(labels: Mapping[str, str]) -> GpuIdentity | None:
    """The GPU GFD's product label names, or ``None`` when the node has no such label."""
    product = labels.get(GFD_PRODUCT_LABEL, "").strip()
    if not product:
        return None
    name = split_product(product)
    model = lookup_product(product)
    memory = _memory_label(labels)
    if memory is None and name.mig is not None:
        memory = name.mig.memory_mib
    if memory is None and model is not None:
        memory = model.memory_gib * 1024
    return GpuIdentity(
        scheme=SCHEME_GFD,
        product=product,
        name=model.name if model is not None else derive_name(product),
        known=model is not None,
        memory_mib=memory,
        mig_profile=name.mig.name if name.mig is not None else None,
        shared=name.shared,
    )


def _memory_label(labels: Mapping[str, str]) -> int | None:
    raw = labels.get(GFD_MEMORY_LABEL)
    memory = positive_int(raw)
    if raw is not None and memory is None:
        warn_once(
            f"gfd-memory:{raw}",
            "ignoring %s=%r: not a positive number of MiB; the catalogue's size is used",
            GFD_MEMORY_LABEL,
            raw,
        )
    return memory
