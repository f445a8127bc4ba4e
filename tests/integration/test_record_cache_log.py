"""The record cache kept current by the change log, on real Redis.

After every way Berth writes runs and jobs, a cache that read only the log must see
what a fresh cache reading everything sees; and it must have read only the log (a
writer that forgot to file its change would otherwise pass, hidden by the full reads).
"""

from __future__ import annotations

import pytest

from shared.queueing.commit import Change, Writer
from shared.queueing.view import RecordCache, View
from shared.state import changes
from shared.state.records import Job, RunStatus
from shared.state.store import Store
from tests.factories import one_job_run, submitted

pytestmark = pytest.mark.integration


_JobSummary = tuple[str, int, RunStatus, str]


def _summary(view: View) -> dict[str, tuple[int, RunStatus, str, list[_JobSummary]]]:
    return {
        run.id: (
            run.version,
            run.status,
            run.reason,
            [(j.id, j.version, j.status, j.reason) for j in view.jobs[run.id]],
        )
        for run in view.runs
    }


def _same_as_full_read(cache: RecordCache, store: Store) -> View:
    view = cache.load(store, heads=1)
    fresh = RecordCache().load(store, heads=1)
    assert _summary(view) == _summary(fresh)
    assert view.capacity_version == fresh.capacity_version
    # The queue's index, kept run by run from the log, says what a fresh one says.
    assert view.queue == fresh.queue
    return view


def test_every_writer_is_seen_through_the_log(store: Store) -> None:
    cache = RecordCache()
    first, first_jobs = one_job_run()
    store.create_run(first, first_jobs, submitted())
    view = _same_as_full_read(cache, store)
    assert [r.id for r in view.runs] == [first.id]
    reads = cache.full_reads

    second, second_jobs = one_job_run()  # created
    store.create_run(second, second_jobs, submitted())
    assert second.id in _summary(_same_as_full_read(cache, store))
    queue = _same_as_full_read(cache, store).queue
    assert queue is not None and queue.cut == {"main": 1}  # two queued, one head

    run = store.get_run(first.id)  # compare-and-set of a run
    run.reason = "waiting for capacity"
    assert store.save_run(run)
    assert _summary(_same_as_full_read(cache, store))[first.id][2] == "waiting for capacity"

    [job] = store.jobs_of(run)  # of a job
    job.reason = "pending here"
    assert store.save_job(job)
    assert _summary(_same_as_full_read(cache, store))[first.id][3][0][3] == "pending here"

    extra = Job(id="extra-" + run.id, run_id=run.id, project="main", run_name=run.name)
    run = store.get_run(first.id)  # jobs added (a service scaling up)
    run.job_ids = [*run.job_ids, extra.id]
    assert store.add_jobs(run, [extra])
    assert len(_summary(_same_as_full_read(cache, store))[first.id][3]) == 2

    writer = Writer(store)  # the scheduler's writes: one, many, fenced in turn
    run = store.get_run(first.id)
    jobs = store.jobs_of(run)
    placed = [j.model_copy(update={"status": RunStatus.PROVISIONING}) for j in jobs]
    assert writer.write(Change(run=run.model_copy(update={"reason": ""}), jobs=placed)) > 0
    assert {s for *_, s, _ in _summary(_same_as_full_read(cache, store))[first.id][3]} == {
        RunStatus.PROVISIONING
    }
    other = store.get_run(second.id)
    writer.write_many([Change(run=other.model_copy(update={"reason": "deep"}))])
    assert _summary(_same_as_full_read(cache, store))[second.id][2] == "deep"
    other = store.get_run(second.id)
    fence = _same_as_full_read(cache, store).capacity_version
    [outcome] = writer.write_in_turn(
        [Change(run=other.model_copy(update={"reason": "x"}))], fence=fence
    )
    assert outcome > fence
    assert _same_as_full_read(cache, store).capacity_version == outcome

    done = store.get_run(second.id)  # a run that finishes leaves the view
    done.status = RunStatus.DONE
    assert store.save_run(done)
    assert second.id not in _summary(_same_as_full_read(cache, store))

    finished = store.get_run(first.id)  # finished through the scheduler's writer
    ended = [j.model_copy(update={"status": RunStatus.FAILED}) for j in store.jobs_of(finished)]
    writer.write(Change(run=finished.model_copy(update={"status": RunStatus.FAILED}), jobs=ended))
    assert _same_as_full_read(cache, store).runs == []

    third, third_jobs = one_job_run()  # deleted while active
    store.create_run(third, third_jobs, submitted())
    assert third.id in _summary(_same_as_full_read(cache, store))
    store.delete_run(store.get_run(third.id))
    assert _same_as_full_read(cache, store).runs == []
    assert cache.full_reads == reads, "a write reached the cache only through a full read"


def test_a_flushed_database_is_read_in_full(store: Store) -> None:
    cache = RecordCache()
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    assert [r.id for r in cache.load(store).runs] == [run.id]
    for key in store.r.scan_iter(f"{store.p}:*"):
        store.r.delete(key)
    # As many writes as before the flush, so the log's numbers alone would not tell.
    again, again_jobs = one_job_run()
    store.create_run(again, again_jobs, submitted())
    reads = cache.full_reads
    assert [r.id for r in _same_as_full_read(cache, store).runs] == [again.id]
    assert cache.full_reads == reads + 1


def test_a_reader_behind_the_trimmed_log_reads_in_full(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "MAX_ENTRIES", 3)
    behind, current = RecordCache(), RecordCache()
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    behind.load(store)
    for _ in range(3):  # 6 records filed: more than the log keeps
        more, more_jobs = one_job_run()
        store.create_run(more, more_jobs, submitted())
    current.load(store)  # a reader trims the log to 3 entries
    assert store.r.zcard(changes.log_keys(store.key)[1]) == 3
    reads = behind.full_reads
    assert len(_same_as_full_read(behind, store).runs) == 4
    assert behind.full_reads == reads + 1


def test_a_write_around_the_log_is_read_at_the_next_full_read(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.queueing import view as view_module

    cache = RecordCache()
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    cache.load(store)
    key = store.key("run", run.id)
    around = run.model_copy(update={"reason": "written around the log", "version": 7})
    store.r.hset(key, mapping={"v": 7, "d": around.model_dump_json()})
    assert cache.load(store).runs[0].reason == ""  # the log did not say
    monkeypatch.setattr(view_module, "FULL_EVERY_S", 0.0)
    assert cache.load(store).runs[0].reason == "written around the log"


def test_a_run_read_between_its_last_write_and_leaving_the_active_set_leaves_the_view(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_run writes a finished run, then takes it out of the active set: a load in
    between sees it still active, and the next one must not keep it."""
    cache = RecordCache()
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    cache.load(store)
    leave = changes.leave_active
    with monkeypatch.context() as patched:
        patched.setattr(changes, "leave_active", lambda *_: None)
        done = store.get_run(run.id)
        done.status = RunStatus.DONE
        assert store.save_run(done)
    assert [r.id for r in cache.load(store).runs] == [run.id]  # read in between
    leave(store.r, store.key, run.id)
    reads = cache.full_reads
    assert _same_as_full_read(cache, store).runs == []
    assert cache.full_reads == reads


def test_a_quick_pass_view_holds_the_heads_and_every_run_not_queued(store: Store) -> None:
    created = []
    for _ in range(3):
        run, jobs = one_job_run()
        store.create_run(run, jobs, submitted())
        created.append(run)
    placed = store.get_run(created[2].id)  # admitted: not queued, in every view
    assert store.save_run(placed.model_copy(update={"status": RunStatus.PROVISIONING}))
    cache = RecordCache()
    asked: list[object] = []

    def quick(queue: object) -> bool:
        asked.append(queue)
        return False

    view = cache.load(store, heads=1, whole=quick)

    oldest = min(created[:2], key=lambda r: (r.submitted_at, r.id))
    assert not view.whole and len(asked) == 1
    assert sorted(r.id for r in view.runs) == sorted([oldest.id, created[2].id])
    assert set(view.jobs) == {r.id for r in view.runs}
    assert cache.load(store, heads=1, whole=lambda queue: True).whole
    assert len(cache.load(store, heads=1, whole=lambda queue: True).runs) == 3
