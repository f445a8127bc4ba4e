"""The free-GPU index gives exactly match()'s offers, in its order, as the pass places jobs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.gpu.catalogue import GpuVendor
from shared.gpu.inventory import GpuInventory, NodeInventory, Resources
from shared.gpu.labels import GpuGroup
from shared.placement.free_index import FreeIndex
from shared.placement.offers import Offer, Request, match

WHOLE, MIG = "nvidia.com/gpu", "nvidia.com/mig-1g.10gb"
MODELS = ("A100", "H100", "A10")
GIB = 2**30


def group(resource: str, model: str, count: int) -> GpuGroup:
    return GpuGroup(
        vendor=GpuVendor.NVIDIA,
        resource=resource,
        count=count,
        product=f"NVIDIA-{model}",
        name=model,
        known=True,
        memory_mib=10240 if resource == MIG else 81920,
        mig_profile="1g.10gb" if resource == MIG else None,
    )


@st.composite
def nodes(draw: st.DrawFn, name: str) -> NodeInventory:
    groups: list[GpuGroup] = []
    gpus: dict[str, int] = {}
    free_gpus: dict[str, int] = {}
    for resource in draw(st.sampled_from([(), (WHOLE,), (MIG,), (WHOLE, MIG), (MIG, WHOLE)])):
        count = draw(st.integers(1, 8))
        groups.append(group(resource, draw(st.sampled_from(MODELS)), count))
        gpus[resource] = count
        free_gpus[resource] = draw(st.integers(0, count))
    cpu = draw(st.sampled_from([8_000, 64_000]))
    memory = draw(st.sampled_from([32 * GIB, 512 * GIB]))
    allocatable = Resources(cpu_millicores=cpu, memory_bytes=memory, gpus=gpus)
    free = Resources(
        cpu_millicores=draw(st.integers(0, cpu)),
        memory_bytes=draw(st.integers(0, memory)),
        gpus=free_gpus,
    )
    return NodeInventory(
        name=name,
        schedulable=draw(st.booleans() | st.just(True)),
        gpus=tuple(groups),
        allocatable=allocatable,
        free=free,
    )


@st.composite
def clusters(draw: st.DrawFn) -> GpuInventory:
    count = draw(st.integers(0, 14))
    return GpuInventory(nodes=tuple(draw(nodes(f"node-{i:02d}")) for i in range(count)))


requests = st.builds(
    Request,
    gpu_count=st.integers(0, 8),
    gpu_names=st.sampled_from([frozenset(), frozenset({"a100"}), frozenset({"h100", "a10"})]),
    cpu_millicores=st.sampled_from([0, 1_000, 16_000]),
    memory_bytes=st.sampled_from([0, GIB, 64 * GIB]),
    nodes=st.integers(1, 3),
    blocks=st.sampled_from([None, None, None, 2, "auto"]),
)

# A change to what the pass holds on a node: (node number, GPUs of each resource, CPU).
changes = st.lists(
    st.tuples(st.integers(0, 13), st.integers(-2, 4), st.integers(-1, 3), st.integers(0, 4_000)),
    max_size=12,
)


def expected(
    inventory: GpuInventory, request: Request, reserved: dict[str, Resources], exclude: set[str]
) -> list[Offer]:
    one = replace(request, nodes=1)
    return [o for o in match(inventory, one, reserved=reserved).offers if o.node not in exclude]


@settings(max_examples=300, deadline=None)
@given(
    inventory=clusters(),
    asks=st.lists(requests, min_size=1, max_size=4),
    steps=changes,
    excluded=st.sets(st.integers(0, 13), max_size=4),
)
def test_offers_are_matchs_offers_in_its_order_before_and_after_each_change(
    inventory: GpuInventory,
    asks: list[Request],
    steps: list[tuple[int, int, int, int]],
    excluded: set[int],
) -> None:
    reserved: dict[str, Resources] = {}
    index = FreeIndex(inventory, reserved)
    exclude = {f"node-{i:02d}" for i in excluded}
    for ask in asks:  # the buckets are built on the first question of each shape
        assert list(index.offers(ask, exclude=exclude)) == expected(
            inventory, ask, reserved, exclude
        )
    for number, whole, mig, cpu in steps:
        name = f"node-{number:02d}"
        held = reserved.get(name) or Resources()
        reserved[name] = Resources(
            cpu_millicores=held.cpu_millicores + cpu,
            memory_bytes=held.memory_bytes,
            gpus={
                WHOLE: held.gpus.get(WHOLE, 0) + whole,
                MIG: held.gpus.get(MIG, 0) + mig,
            },
        )
        index.changed(name)
        for ask in asks:
            assert list(index.offers(ask, exclude=exclude)) == expected(
                inventory, ask, reserved, exclude
            )


def test_the_best_fit_is_the_node_with_the_fewest_gpus_left_then_the_first_name() -> None:
    def node(name: str, free: int) -> NodeInventory:
        room = Resources(cpu_millicores=64_000, memory_bytes=512 * GIB, gpus={WHOLE: 8})
        return NodeInventory(
            name=name,
            gpus=(group(WHOLE, "H100", 8),),
            allocatable=room,
            free=replace_gpus(room, free),
        )

    inventory = GpuInventory(nodes=(node("a", 8), node("b", 3), node("c", 2), node("d", 3)))
    reserved: dict[str, Resources] = {}
    index = FreeIndex(inventory, reserved)
    two = Request(gpu_count=2, gpu_names=frozenset({"h100"}))
    assert [o.node for o in index.offers(two)] == ["c", "b", "d", "a"]

    # The pass takes 2 of b's 3: b now has 1 free and leaves the offers for two GPUs.
    reserved["b"] = Resources(gpus={WHOLE: 2})
    index.changed("b")
    assert [o.node for o in index.offers(two)] == ["c", "d", "a"]
    assert [o.node for o in index.offers(two, exclude={"c"})] == ["d", "a"]

    # 1 of d's 3 taken: d now fits as tightly as c, and comes after it by name.
    reserved["d"] = Resources(gpus={WHOLE: 1})
    index.changed("d")
    assert [o.node for o in index.offers(two)] == ["c", "d", "a"]
    # A job on a gives its 6 back (a release): a leaves the end of the list for 2 free.
    reserved["a"] = Resources(gpus={WHOLE: 6})
    index.changed("a")
    assert [(o.node, o.free_gpus) for o in index.offers(two)] == [("a", 2), ("c", 2), ("d", 2)]
    # ... and b, released, is back with its 3.
    reserved["b"] = Resources()
    index.changed("b")
    assert [o.node for o in index.offers(two)] == ["a", "c", "d", "b"]


def replace_gpus(room: Resources, free: int) -> Resources:
    return Resources(
        cpu_millicores=room.cpu_millicores, memory_bytes=room.memory_bytes, gpus={WHOLE: free}
    )
