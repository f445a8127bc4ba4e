"""Beat's service scaling on a real Redis: requests counted by the proxy's code move a
running service's replica count, once per decision, with dstack's delays.

The clock is passed in (``now``), so the delays cost no waiting.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from shared.configuration import configuration_from_mapping
from shared.services import service_traffic
from shared.state.jobs import jobs_for, refresh_run
from shared.state.records import Event, Run, RunStatus
from workers import scheduling, service_scaling
from workers.context import WorkerContext
from workers.requeue import RequeueOutcome, requeue_run

pytestmark = pytest.mark.integration

SERVICE = {
    "type": "service",
    "name": "chat",
    "port": 8000,
    "commands": ["serve"],
    "replicas": "1..3",
    "scaling": {
        "metric": "rps",
        "target": 2,
        "window": "10s",
        "scale_up_delay": "30s",
        "scale_down_delay": "60s",
    },
}


GROUPS = {
    "type": "service",
    "name": "chat",
    "port": 8000,
    "replicas": [
        {"name": "router", "count": 1, "commands": ["route"]},
        {
            "name": "prefill",
            "count": "1..4",
            "commands": ["prefill"],
            "scaling": {"metric": "rps", "target": 2, "window": "10s", "scale_up_delay": "30s"},
        },
        {
            "name": "decode",
            "count": "0..2",
            "commands": ["decode"],
            "scaling": {"metric": "rps", "target": 4, "window": "10s", "scale_up_delay": "30s"},
        },
    ],
}


def _running_service(
    ctx: WorkerContext,
    submitted_at: float,
    replicas: str = "1..3",
    resources: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Run:
    extra = {"resources": resources} if resources else {}
    conf = configuration_from_mapping(data or {**SERVICE, "replicas": replicas, **extra})
    run = Run(
        id=uuid.uuid4().hex,
        project="main",
        name="chat",
        user="tester",
        configuration=conf.model_dump(mode="json"),
        configuration_type="service",
        submitted_at=submitted_at,
    )
    jobs = jobs_for(run, conf)
    run.job_ids = [j.id for j in jobs]
    for job in jobs:
        job.status, job.pod_ip = RunStatus.RUNNING, "10.0.0.9"
    run.status = RunStatus.RUNNING
    ctx.store.create_run(run, jobs, Event(at=submitted_at, kind="status", message="test"))
    return ctx.store.get_run(run.id)


def _load(ctx: WorkerContext, run: Run, rps: int, *, now: float) -> None:
    # The proxy's own counting: rps requests in each second of the window before now.
    for second in range(int(now) - 10, int(now)):
        for _ in range(rps):
            service_traffic.count_request(ctx.store, run.id, now=second + 0.5)


def test_load_adds_replicas_that_queue_for_placement_once_per_decision(ctx: WorkerContext) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100)
    _load(ctx, run, 5, now=now)  # 5 rps over a target of 2: 3 replicas
    assert service_scaling.scale_service(ctx, run.id, now=now) == 3
    assert service_scaling.scale_service(ctx, run.id, now=now) is None  # already there
    run = ctx.store.get_run(run.id)
    jobs = sorted(ctx.store.jobs_of(run), key=lambda j: j.replica_num)
    assert [(j.replica_num, j.status) for j in jobs] == [
        (0, RunStatus.RUNNING),
        (1, RunStatus.SUBMITTED),
        (2, RunStatus.SUBMITTED),
    ]
    assert run.scaled_at == now
    assert refresh_run(ctx.store, run.id).status == RunStatus.RUNNING  # still serving
    assert "scaling from 1 to 3 replicas" in " ".join(
        e.message for _, e in ctx.store.events(run.id)
    )


def test_scaling_up_waits_for_the_delay_since_the_service_started(ctx: WorkerContext) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 10)  # scale_up_delay is 30 s
    _load(ctx, run, 5, now=now)
    assert service_scaling.scale_service(ctx, run.id, now=now) is None
    assert len(ctx.store.get_run(run.id).job_ids) == 1


def test_without_load_the_newest_replicas_retire_after_the_scale_down_delay(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100)
    _load(ctx, run, 5, now=now)
    assert service_scaling.scale_service(ctx, run.id, now=now) == 3
    later = now + 30  # the window holds no request any more
    assert service_scaling.scale_service(ctx, run.id, now=later) is None  # 60 s not passed
    assert service_scaling.scale_service(ctx, run.id, now=now + 61) == 1
    jobs = sorted(ctx.store.jobs_of(ctx.store.get_run(run.id)), key=lambda j: j.replica_num)
    assert [(j.replica_num, j.retired, j.status) for j in jobs] == [
        (0, False, RunStatus.RUNNING),
        (1, True, RunStatus.TERMINATING),
        (2, True, RunStatus.TERMINATING),
    ]
    assert jobs[1].reason == service_scaling.SCALED_DOWN
    # Retired replicas do not make the service "terminating": it keeps serving.
    assert refresh_run(ctx.store, run.id).status == RunStatus.RUNNING


def test_a_service_scaled_to_zero_stays_up_and_one_request_brings_a_replica_back(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100, replicas="0..2")
    assert service_scaling.scale_service(ctx, run.id, now=now) == 0  # no request for 10 s
    assert refresh_run(ctx.store, run.id).status == RunStatus.RUNNING
    service_traffic.count_request(ctx.store, run.id, now=now + 1)  # the proxy's 503, counted
    # From zero no delay applies: the next tick adds a replica.
    assert service_scaling.scale_service(ctx, run.id, now=now + 2) == 1
    live = [j for j in ctx.store.jobs_of(ctx.store.get_run(run.id)) if not j.retired]
    assert [(j.replica_num, j.status) for j in live] == [(1, RunStatus.SUBMITTED)]


def test_a_requeued_service_brings_back_its_live_replicas_not_the_retired_ones(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100)
    _load(ctx, run, 5, now=now)
    assert service_scaling.scale_service(ctx, run.id, now=now) == 3
    assert service_scaling.scale_service(ctx, run.id, now=now + 61) == 1

    assert requeue_run(ctx, run.id, "a replica's node was lost") == RequeueOutcome.REQUEUED

    jobs = sorted(ctx.store.jobs_of(ctx.store.get_run(run.id)), key=lambda j: j.replica_num)
    assert [(j.replica_num, j.retired, j.status) for j in jobs] == [
        (0, False, RunStatus.PENDING),
        (1, True, RunStatus.TERMINATING),
        (2, True, RunStatus.TERMINATING),
    ]


def test_the_scheduler_places_the_added_replicas_of_a_running_service(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100, resources={"gpu": "A100:1"})
    _load(ctx, run, 5, now=now)
    assert service_scaling.scale_service(ctx, run.id, now=now) == 3

    result = scheduling.run_pass(ctx)

    assert result.placed == ["chat"]
    jobs = sorted(ctx.store.jobs_of(ctx.store.get_run(run.id)), key=lambda j: j.replica_num)
    assert [j.status for j in jobs] == [RunStatus.RUNNING, *[RunStatus.PROVISIONING] * 2]
    assert all(j.placement is not None and j.placement.gpus == 1 for j in jobs[1:])
    current = ctx.store.get_run(run.id)
    assert (current.status, current.reason) == (RunStatus.RUNNING, "")


def test_a_replica_no_node_can_take_leaves_the_service_running_saying_why(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    # The test cluster has only GPU nodes, which take no CPU-only pod.
    run = _running_service(ctx, submitted_at=now - 100)
    _load(ctx, run, 5, now=now)
    assert service_scaling.scale_service(ctx, run.id, now=now) == 3

    scheduling.run_pass(ctx)

    current = ctx.store.get_run(run.id)
    assert current.status == RunStatus.RUNNING
    assert current.reason.startswith("a replica cannot be added: impossible"), current.reason
    jobs = sorted(ctx.store.jobs_of(current), key=lambda j: j.replica_num)
    assert [j.status for j in jobs] == [RunStatus.RUNNING, *[RunStatus.PENDING] * 2]


def test_each_replica_group_scales_by_its_own_rule_on_the_services_requests(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    run = _running_service(ctx, submitted_at=now - 100, data=GROUPS)
    _load(ctx, run, 6, now=now)  # 6 rps: prefill (target 2) wants 3, decode (target 4) 2
    assert service_scaling.scale_service(ctx, run.id, now=now) == 6
    jobs = sorted(ctx.store.jobs_of(ctx.store.get_run(run.id)), key=lambda j: j.replica_num)
    assert [(j.group, j.status) for j in jobs] == [
        ("router", RunStatus.RUNNING),  # no scaling: its count stays
        ("prefill", RunStatus.RUNNING),
        ("prefill", RunStatus.SUBMITTED),
        ("prefill", RunStatus.SUBMITTED),
        ("decode", RunStatus.SUBMITTED),
        ("decode", RunStatus.SUBMITTED),
    ]
    assert "group prefill 1 to 3, group decode 0 to 2" in " ".join(
        e.message for _, e in ctx.store.events(run.id)
    )
    # Without requests, each group goes back to its own minimum after the delay.
    assert service_scaling.scale_service(ctx, run.id, now=now + 700) == 2
    live = [j for j in ctx.store.jobs_of(ctx.store.get_run(run.id)) if not j.retired]
    assert sorted((j.group or "") for j in live) == ["prefill", "router"]
