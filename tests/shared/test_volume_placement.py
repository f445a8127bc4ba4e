"""Where a run's volumes let it go, and which mounts a project allows: pure rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.configuration.parse import parse_run_configuration
from shared.state.records import Job, Placement, Run, RunStatus
from shared.volumes.volume_placement import (
    ClaimState,
    allowed_nodes_for_volumes,
    berth_claim_name,
    berth_volume_nodes,
    describe_volume_limits,
    host_volume_refusal,
    mounted_volumes,
    nodes_matching,
    usable_mounts,
)

RWO = frozenset({"ReadWriteOnce"})
RWX = frozenset({"ReadWriteMany"})


def claim(
    name: str = "data",
    modes: frozenset[str] = RWO,
    *,
    used_on: tuple[str, ...] = (),
    pinned: tuple[str, ...] | None = None,
    pods: int = 0,
) -> ClaimState:
    return ClaimState(
        volume=name,
        claim=f"pvc-{name}",
        access_modes=modes,
        pinned_nodes=frozenset(pinned) if pinned is not None else None,
        used_on=frozenset(used_on),
        pods=pods or len(used_on),
    )


def test_an_unused_read_write_once_claim_does_not_restrict_placement() -> None:
    assert allowed_nodes_for_volumes([claim()]) is None


def test_a_read_write_once_claim_in_use_pins_the_run_to_that_node() -> None:
    assert allowed_nodes_for_volumes([claim(used_on=("gpu-3",))]) == frozenset({"gpu-3"})


def test_a_read_write_many_claim_in_use_leaves_every_node_open() -> None:
    assert allowed_nodes_for_volumes([claim(modes=RWX, used_on=("gpu-3",))]) is None


def test_a_persistent_volume_with_node_affinity_restricts_even_when_unused() -> None:
    assert allowed_nodes_for_volumes([claim(modes=RWX, pinned=("a", "b"))]) == frozenset("ab")


def test_two_claims_in_use_on_different_nodes_leave_no_node() -> None:
    claims = [claim("one", used_on=("a",)), claim("two", used_on=("b",))]
    assert allowed_nodes_for_volumes(claims) == frozenset()
    assert describe_volume_limits(claims) == (
        "volume one (ReadWriteOnce) is in use on a; volume two (ReadWriteOnce) is in use on b"
    )


def test_a_read_write_once_pod_claim_in_use_admits_no_second_pod_anywhere() -> None:
    assert allowed_nodes_for_volumes([claim(modes=frozenset({"ReadWriteOncePod"}), pods=1)]) == (
        frozenset()
    )


@given(
    st.lists(
        st.tuples(
            st.sampled_from([RWO, RWX]),
            st.frozensets(st.sampled_from("abcd"), max_size=2),
            st.one_of(st.none(), st.frozensets(st.sampled_from("abcd"))),
        ),
        max_size=4,
    )
)
def test_the_allowed_nodes_are_those_every_claim_allows(
    specs: list[tuple[frozenset[str], frozenset[str], frozenset[str] | None]],
) -> None:
    claims = [
        ClaimState(f"v{i}", f"c{i}", modes, pinned, used_on=used, pods=len(used))
        for i, (modes, used, pinned) in enumerate(specs)
    ]
    allowed = allowed_nodes_for_volumes(claims)
    for node in "abcd":
        every = all(
            (c.pinned_nodes is None or node in c.pinned_nodes)
            and (c.access_modes != RWO or not c.used_on or node in c.used_on)
            for c in claims
        )
        assert (allowed is None or node in allowed) == every


def test_berths_own_placements_count_before_their_pods_exist() -> None:
    conf = {"volumes": [{"name": "data", "path": "/d"}, {"instance_path": "/x", "path": "/x"}]}
    run = Run(id="r", project="p", name="a", user="u", configuration=conf, configuration_type="t")
    placed = Job(
        id="j", run_id="r", project="p", run_name="a", status=RunStatus.PROVISIONING,
        placement=Placement(node="gpu-1"),
    )  # fmt: skip
    waiting = Job(id="k", run_id="r", project="p", run_name="a", status=RunStatus.PENDING)
    assert berth_volume_nodes([(run, [placed, waiting])]) == {("p", "data"): {"gpu-1"}}
    assert mounted_volumes(conf) == ["data"]


def test_node_affinity_terms_match_like_the_scheduler_does() -> None:
    nodes = {
        "a": {"zone": "z1", "disk": "ssd"},
        "b": {"zone": "z2", "disk": "ssd"},
        "c": {"zone": "z1"},
    }
    ssd_in_z1 = [
        {
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["z1"]},
                {"key": "disk", "operator": "Exists"},
            ]
        }
    ]
    assert nodes_matching(nodes, ssd_in_z1) == {"a"}
    by_name_or_no_disk: list[dict[str, Any]] = [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
        {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]},
    ]
    assert nodes_matching(nodes, by_name_or_no_disk) == {"b", "c"}
    assert nodes_matching(nodes, [{}]) == frozenset()


def test_node_directories_are_refused_unless_the_backend_allows_them() -> None:
    conf = parse_run_configuration(
        "type: task\nimage: x\nvolumes: ['/data:/data', {instance_path: /tmp/x, path: /x,"
        " optional: true}, 'vol:/v']"
    )
    refusal = host_volume_refusal(conf.volumes, allow_host_volumes=False)
    assert refusal is not None
    assert "not allowed in this project: /data:/data." in refusal
    assert "allow_host_volumes: true" in refusal
    assert host_volume_refusal(conf.volumes, allow_host_volumes=True) is None


def test_an_optional_node_directory_is_dropped_where_host_volumes_are_off() -> None:
    conf = parse_run_configuration(
        "type: task\nimage: x\nvolumes: [{instance_path: /tmp/x, path: /x, optional: true}]"
    )
    assert host_volume_refusal(conf.volumes, allow_host_volumes=False) is None
    assert usable_mounts(conf.volumes, allow_host_volumes=False) == []
    assert usable_mounts(conf.volumes, allow_host_volumes=True) == conf.volumes


def test_berths_claim_names_are_deterministic_dns_labels() -> None:
    assert berth_claim_name("main", "data") == "berth-main-vol-data"
    long = berth_claim_name("p" * 40, "v" * 40)
    assert len(long) <= 63 and long == berth_claim_name("p" * 40, "v" * 40)
    assert long != berth_claim_name("p" * 40, "v" * 39 + "w")
