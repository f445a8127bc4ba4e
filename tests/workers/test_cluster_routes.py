"""Which cluster each run is planned in first, and where it may be carried (pure)."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.policy import access
from shared.queueing.view import View
from shared.state.records import Placement, Run
from tests.factories import one_job_run
from workers.cluster_routes import GroupKey, route

EAST: GroupKey = ("k-east", access.Mode.CLUSTER)
WEST: GroupKey = ("k-west", access.Mode.CLUSTER)
RANKS = {"k-east": 0, "k-west": 1}


def _clusters(project: str) -> list[tuple[str, GroupKey]]:
    if project == "lost":
        raise ConfigError("project 'lost' has no kubernetes backend", field="projects")
    if project == "westward":  # lists west first; the config names east first elsewhere
        return [("w", WEST), ("e", EAST)]
    return [("east", EAST), ("west", WEST)]


def _view(*runs: tuple[Run, list]) -> View:  # type: ignore[type-arg]
    return View(capacity_version=0, runs=[r for r, _ in runs], jobs={r.id: j for r, j in runs})


def test_a_queued_run_starts_in_the_first_cluster_and_may_be_carried_to_the_next() -> None:
    run, jobs = one_job_run("a")
    routes, refused = route(_view((run, jobs)), _clusters, RANKS)
    assert refused == {}
    assert [g.key for g in routes.in_order()] == [EAST]
    assert routes.groups[EAST].names == {"main": "east"}
    assert routes.carry(run)
    assert [r.name for r in routes.groups[WEST].members] == ["a"]
    assert run.id in routes.moved
    assert not routes.carry(run)  # no third cluster


def test_a_run_holding_a_placement_stays_in_its_cluster() -> None:
    run, jobs = one_job_run("held")
    jobs[0].placement = Placement(node="kwok-a10-0", gpus=1, cluster="west")
    routes, _ = route(_view((run, jobs)), _clusters, RANKS)
    assert [g.key for g in routes.in_order()] == [WEST]
    assert routes.pinned(run.id)
    assert not routes.carry(run)


def test_a_placement_made_before_clusters_had_names_is_in_the_first() -> None:
    run, jobs = one_job_run("old")
    jobs[0].placement = Placement(node="kwok-a10-0", gpus=1)
    routes, _ = route(_view((run, jobs)), _clusters, RANKS)
    assert [g.key for g in routes.in_order()] == [EAST]
    assert routes.pinned(run.id)


def test_a_run_mounting_a_volume_is_planned_only_in_the_first_cluster() -> None:
    run, jobs = one_job_run("vol")
    run.configuration = {"type": "task", "volumes": [{"name": "data", "path": "/data"}]}
    routes, _ = route(_view((run, jobs)), _clusters, RANKS)
    assert [g.key for g in routes.in_order()] == [EAST]
    assert not routes.carry(run)


def test_clusters_are_tried_in_the_configs_order_for_every_project() -> None:
    # Each cluster is planned once per pass, so carrying only ever goes to later ones.
    run, jobs = one_job_run("w")
    run.project = "westward"
    routes, _ = route(_view((run, jobs)), _clusters, RANKS)
    assert [g.key for g in routes.in_order()] == [EAST]
    assert routes.groups[EAST].names == {"westward": "e"}
    assert routes.carry(run)
    assert routes.groups[WEST].names == {"westward": "w"}


def test_a_project_without_a_backend_is_returned_apart_with_its_error() -> None:
    run, jobs = one_job_run("x")
    run.project = "lost"
    routes, refused = route(_view((run, jobs)), _clusters, RANKS)
    assert list(routes.in_order()) == []
    assert "no kubernetes backend" in str(refused[run.id])
