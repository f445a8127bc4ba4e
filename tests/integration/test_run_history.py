"""Run listing against a real Redis: every active run whatever the history, pages of history.

Tried as a user would: one service running, then a sweep of 1,100 one-second
tasks in the same project. When the sweep had ended, ``berth ps`` showed no runs
at all: the list read only the 1,000 newest runs and filtered them.
"""

from __future__ import annotations

import time

import pytest

from api.services.run_history import list_runs
from shared.errors import ConfigError
from shared.state.records import Event, Run, RunStatus
from shared.state.store import Store
from tests.factories import run_record

pytestmark = pytest.mark.integration


def _record(store: Store, name: str, status: RunStatus, at: float, kind: str = "task") -> Run:
    run = run_record(name, status, kind=kind, submitted_at=at)
    store.create_run(run, [], Event(at=at, kind="status", message="submitted"))
    if status.is_finished:
        store.save_run(run)  # leaving the set of active runs, as a finished run does
    return run


def test_an_old_active_run_is_listed_after_a_sweep_of_1100_finished_runs(store: Store) -> None:
    start = time.time() - 10_000
    _record(store, "long-service", RunStatus.RUNNING, start, kind="service")
    for i in range(1100):
        _record(store, f"sweep-{i}", RunStatus.DONE, start + 1 + i)
    active, cursor = list_runs(
        store, "main", history=False, status=None, prefix=None, limit=100, cursor=None
    )
    assert [r.name for r in active] == ["long-service"]
    assert cursor is None


def test_history_pages_cover_every_run_once_newest_first(store: Store) -> None:
    start = time.time() - 10_000
    names = [_record(store, f"r-{i:03}", RunStatus.DONE, start + i).name for i in range(250)]
    # Two runs submitted in the same microsecond: both listed, once each.
    names += [_record(store, tie, RunStatus.FAILED, start + 500).name for tie in ("tie-a", "tie-b")]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = list_runs(
            store, "main", history=True, status=None, prefix=None, limit=100, cursor=cursor
        )
        pages += 1
        seen += [r.name for r in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
    assert seen[:2] == ["tie-b", "tie-a"] and seen[2:5] == ["r-249", "r-248", "r-247"]
    assert pages == 3


def test_history_filters_by_status_and_name_prefix(store: Store) -> None:
    start = time.time() - 10_000
    for i in range(300):
        status = RunStatus.FAILED if i % 100 == 0 else RunStatus.DONE
        _record(store, f"{'eval' if i % 2 else 'train'}-{i}", status, start + i)
    failed, _ = list_runs(
        store, "main", history=True, status=RunStatus.FAILED, prefix=None, limit=10, cursor=None
    )
    assert [r.name for r in failed] == ["train-200", "train-100", "train-0"]
    evals, cursor = list_runs(
        store, "main", history=True, status=None, prefix="eval-", limit=5, cursor=None
    )
    assert [r.name for r in evals] == ["eval-299", "eval-297", "eval-295", "eval-293", "eval-291"]
    more, _ = list_runs(
        store, "main", history=True, status=None, prefix="eval-", limit=2, cursor=cursor
    )
    assert [r.name for r in more] == ["eval-289", "eval-287"]


def test_a_bad_cursor_is_refused_naming_the_field(store: Store) -> None:
    with pytest.raises(ConfigError) as caught:
        list_runs(store, "main", history=True, status=None, prefix=None, limit=5, cursor="x")
    assert caught.value.field == "cursor"
