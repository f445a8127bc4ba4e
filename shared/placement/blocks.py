"""dstack's fleet ``blocks``: a node split into equal blocks, each run taking whole ones. Pure.

dstack splits an instance's GPUs, CPU and memory evenly into ``blocks`` (``auto``:
one block per GPU) and gives each job as many whole blocks as its resources need,
up to the whole node; a multi-node task takes every block of each of its nodes.
On Kubernetes the blocks are a node's *allocatable* resources divided so, and a
job's pod requests what its blocks hold: a run asking for 1 GPU on an 8-GPU node
split in 4 gets 2 GPUs and a quarter of the node's CPU and memory, so runs on
the fleet share its nodes as dstack's runs share an instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Blocks = int | Literal["auto"]


@dataclass(frozen=True)
class BlockShare:
    """What a job's whole blocks hold on one node."""

    blocks: int
    gpus: int
    cpu_millicores: int
    memory_bytes: int


def block_share(
    blocks: Blocks,
    *,
    node_gpus: int,
    node_cpu_millicores: int,
    node_memory_bytes: int,
    gpus: int,
    cpu_millicores: int,
    memory_bytes: int,
    whole_node: bool = False,
) -> BlockShare | None:
    """The fewest whole blocks of the node that hold the request; None if none can.

    ``whole_node`` (a multi-node task) takes every block.
    """
    count = _count(blocks, node_gpus=node_gpus, node_cpu_millicores=node_cpu_millicores)
    per_gpu = node_gpus // count
    per_cpu = node_cpu_millicores // count
    per_memory = node_memory_bytes // count
    if gpus and per_gpu == 0:
        return None  # more blocks than GPUs: a block holds none
    needed = (
        count
        if whole_node
        else max(
            1,
            math.ceil(gpus / per_gpu) if gpus else 1,
            math.ceil(cpu_millicores / per_cpu) if per_cpu else 1,
            math.ceil(memory_bytes / per_memory) if per_memory else 1,
        )
    )
    if needed > count:
        return None
    return BlockShare(
        blocks=needed,
        gpus=needed * per_gpu if gpus else 0,
        cpu_millicores=needed * per_cpu,
        memory_bytes=needed * per_memory,
    )


def _count(blocks: Blocks, *, node_gpus: int, node_cpu_millicores: int) -> int:
    if blocks != "auto":
        return max(1, blocks)
    # dstack's auto: one block per GPU; a node without GPUs, one per whole CPU.
    return max(1, node_gpus or node_cpu_millicores // 1000)
