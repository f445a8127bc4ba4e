"""``Store.active_runs_of`` and ``Store.job_states`` against a real Redis: beat's
service and dev-environment tasks read only the active runs of their type, each whole
and at its version; the orphan reaper reads only each job's status."""

from __future__ import annotations

import time

import pytest

from shared.state.records import Event, Job, Run, RunStatus
from shared.state.store import Store
from tests.factories import run_record

pytestmark = pytest.mark.integration


def _record(store: Store, name: str, kind: str, status: RunStatus, **conf: object) -> Run:
    run = run_record(name, status, kind=kind, conf=conf)
    store.create_run(run, [], Event(at=time.time(), kind="status", message="submitted"))
    if status.is_finished:
        store.save_run(run)  # leaves the set of active runs, as a finished run does
    return run


def test_only_active_runs_of_the_type_are_returned_whole(store: Store) -> None:
    _record(store, "web", "service", RunStatus.RUNNING, port=8000)
    _record(store, "web-old", "service", RunStatus.DONE, port=8000)
    _record(store, "ide", "dev-environment", RunStatus.RUNNING, ide="vscode")
    # A task whose configuration names "service" below the top level is still a task.
    _record(store, "train", "task", RunStatus.PENDING, env={"type": "service"})
    waiting = _record(store, "api", "service", RunStatus.PENDING, port=80)
    waiting.reason = "waiting for a GPU"
    assert store.save_run(waiting)

    services = {r.name: r for r in store.active_runs_of("service")}
    assert sorted(services) == ["api", "web"]
    assert services["web"].configuration == {"type": "service", "port": 8000}
    assert services["api"].reason == "waiting for a GPU"
    assert services["api"].version == store.get_run(waiting.id).version
    assert [r.name for r in store.active_runs_of("dev-environment")] == ["ide"]
    assert [r.name for r in store.active_runs_of("task")] == ["train"]
    assert store.active_runs_of("fleet") == []


def test_types_read_once_still_follow_runs_that_start_change_and_end(store: Store) -> None:
    web = _record(store, "web", "service", RunStatus.RUNNING, port=8000)
    _record(store, "train", "task", RunStatus.PENDING)
    assert [r.name for r in store.active_runs_of("service")] == ["web"]  # types now known

    web.reason = "scaling up"
    assert store.save_run(web)  # a change after the type was read: returned as it is now
    _record(store, "api", "service", RunStatus.PENDING, port=80)  # new since the last call
    services = {r.name: r for r in store.active_runs_of("service")}
    assert sorted(services) == ["api", "web"]
    assert services["web"].reason == "scaling up"
    assert services["web"].version == web.version

    web.status = RunStatus.DONE
    assert store.save_run(web)  # ended: no longer active
    assert [r.name for r in store.active_runs_of("service")] == ["api"]
    assert [r.name for r in store.active_runs_of("task")] == ["train"]


def test_job_states_name_each_existing_jobs_status(store: Store) -> None:
    run = run_record("train", RunStatus.RUNNING)
    jobs = [
        Job(id=f"job-{s}", run_id=run.id, project="main", run_name="train", status=s)
        for s in (RunStatus.RUNNING, RunStatus.DONE)
    ]
    store.create_run(run, jobs, Event(at=time.time(), kind="status", message="submitted"))
    states = store.job_states(["job-running", "job-done", "job-missing"])
    assert states == {"job-running": RunStatus.RUNNING, "job-done": RunStatus.DONE}
    assert states["job-done"].is_finished and not states["job-running"].is_finished
