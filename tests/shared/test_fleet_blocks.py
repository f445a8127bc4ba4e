"""dstack's fleet ``blocks``: a node split evenly, each run taking whole blocks of it;
and an ``idle_duration`` that is not a duration refused by name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.configuration.fleets import FleetConfiguration
from shared.configuration.parse import parse_configuration
from shared.errors import ConfigError
from shared.placement.blocks import Blocks, BlockShare, block_share
from shared.queueing import plan
from tests.shared.test_queue import cluster, request, run

GIB = 2**30


def _share(
    blocks: Blocks, gpus: int, *, cpu: int = 0, memory: int = 0, whole: bool = False
) -> BlockShare | None:
    """On dstack's example node: 8 GPUs, 128 CPUs, 2 TB of memory."""
    return block_share(
        blocks,
        node_gpus=8,
        node_cpu_millicores=128_000,
        node_memory_bytes=2048 * GIB,
        gpus=gpus,
        cpu_millicores=cpu,
        memory_bytes=memory,
        whole_node=whole,
    )


def _taken(blocks: Blocks, gpus: int, **kwargs: Any) -> BlockShare:
    share = _share(blocks, gpus, **kwargs)
    assert share is not None
    return share


def test_dstacks_example_8_blocks_of_8_gpus_128_cpus_2tb_give_1_gpu_16_cpus_256gb() -> None:
    share = _taken(8, 1)
    assert (share.blocks, share.gpus, share.cpu_millicores, share.memory_bytes) == (
        1,
        1,
        16_000,
        256 * GIB,
    )


def test_a_run_takes_the_fewest_whole_blocks_holding_every_resource_it_asks() -> None:
    assert _taken(4, 1).gpus == 2
    assert _taken(4, 3).blocks == 2
    # CPU can need more blocks than GPUs do: 40 CPUs are two blocks of 32.
    assert _taken(4, 1, cpu=40_000).blocks == 2
    assert _share(4, 9) is None  # more than the whole node


def test_auto_is_one_block_per_gpu_and_a_multi_node_task_takes_every_block() -> None:
    assert _taken("auto", 1).gpus == 1
    assert _taken(4, 1, whole=True).blocks == 4


def test_runs_on_a_blocked_fleet_share_a_node_block_by_block() -> None:
    inventory = cluster(("a0", "A100", 8))
    blocked = [replace(run(f"r{i}", at=i), request=replace(request(1), blocks=4)) for i in range(5)]

    result = plan(inventory, blocked, [])

    placements = [a.placements[0] for a in result.admits]
    assert len(placements) == 4  # four blocks of 2 GPUs: the fifth run waits
    assert {(p.gpus, p.cpu_milli, p.memory_bytes) for p in placements} == {
        (2, 96_000 // 4, 2**40 // 4)
    }
    assert [w.run_id for w in result.waits] == ["r4"]


def test_a_fleet_takes_blocks_as_a_count_or_auto() -> None:
    four = parse_configuration("type: fleet\nnodes: 0..2\nblocks: 4\n")
    auto = parse_configuration("type: fleet\nnodes: 1\nblocks: auto\n")
    assert isinstance(four, FleetConfiguration) and four.blocks == 4
    assert isinstance(auto, FleetConfiguration) and auto.blocks == "auto"
    with pytest.raises(ConfigError) as caught:
        parse_configuration("type: fleet\nnodes: 1\nblocks: 0\n")
    assert caught.value.field == "blocks"


def test_an_idle_duration_that_is_no_duration_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_configuration("type: fleet\nnodes: 0..2\nidle_duration: soon\n")
    assert caught.value.field == "idle_duration"
    assert "expected a duration" in caught.value.message
