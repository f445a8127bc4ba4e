"""Redis ``WAIT``: Berth takes a new run, and a state change, only once replicas have it.

A primary and one replica on loopback (Redis as Berth ships it), no Sentinel:
waiting for one replica succeeds, waiting for two cannot, which is how a
group that lost replicas looks to the primary.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.errors import ConflictError, NotFoundError, ReplicationError
from shared.state.records import Run, RunStatus
from shared.state.store import Store
from tests.factories import one_job_run, submitted
from tests.sentinel import replica_pair

pytestmark = pytest.mark.integration

# A wait that cannot be met lasts this long. One that can returns as soon as the replica
# acknowledges (about a millisecond on loopback), so it gets a long timeout: a suite
# loading both cores once held a met wait past 500 ms and failed it.
_WAIT_MS = 500
_MET_WAIT_MS = 10_000


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(primary, replica) ports, the replica in sync."""
    with replica_pair(tmp_path_factory.mktemp("replicas")) as pair:
        yield pair


def _store(port: int, *, acks: int) -> Store:
    store = Store.connect(
        f"redis://127.0.0.1:{port}/0", prefix=f"t{uuid.uuid4().hex[:8]}", timeout_s=5
    )
    store.min_replica_acks = acks
    store.replica_ack_timeout_ms = _MET_WAIT_MS if acks <= 1 else _WAIT_MS
    return store


def test_a_new_run_answered_as_taken_is_already_on_the_replica(ports: tuple[int, int]) -> None:
    primary, replica_port = ports
    store = _store(primary, acks=1)
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    replica = redis.Redis(port=replica_port, socket_timeout=5)
    try:
        # Read at once, no polling: WAIT returned only after the replica had it.
        assert replica.hget(store.key("run", run.id), "v") == str(run.version).encode()
        assert replica.hget(store.key("job", jobs[0].id), "v") is not None
    finally:
        replica.close()
        store.close()


def test_a_new_run_too_few_replicas_acknowledged_is_refused_and_withdrawn(
    ports: tuple[int, int],
) -> None:
    primary, _ = ports
    store = _store(primary, acks=2)  # one replica exists: the wait cannot be met
    run, jobs = one_job_run()
    with pytest.raises(ReplicationError, match="min_replica_acks"):
        store.create_run(run, jobs, submitted())
    assert store.find_run(run.id) is None
    assert store.find_job(jobs[0].id) is None
    with pytest.raises(NotFoundError):
        store.run_by_name(run.project, run.name)
    assert run.id not in store.active_run_ids()

    # The client's retry, once replicas answer, takes the same name.
    store.min_replica_acks = 1
    again, again_jobs = one_job_run(name=run.name)
    store.create_run(again, again_jobs, submitted())
    assert store.run_by_name(run.project, run.name).id == again.id
    store.close()


def test_a_new_run_a_worker_already_changed_is_left_for_the_retry_to_find(
    ports: tuple[int, int],
) -> None:
    primary, _ = ports
    store = _store(primary, acks=2)
    run = _refused_but_kept(store)
    kept = store.find_run(run.id)
    assert kept is not None and kept.status == RunStatus.PENDING
    assert store.refused_but_kept(kept)
    store.close()


def test_the_retry_of_a_kept_run_that_finished_since_gets_it_back_not_a_second_run(
    ports: tuple[int, int],
) -> None:
    # The retry may come after the kept run has run to its end: a finished run's name
    # is free, but not for this retry, which would start the same work a second time.
    primary, _ = ports
    store = _store(primary, acks=2)
    run = _refused_but_kept(store)
    store.min_replica_acks = 1  # a replica answers again
    _finish(store, run)

    retry, retry_jobs = one_job_run(name=run.name)
    with pytest.raises(ConflictError) as refused:
        store.create_run(retry, retry_jobs, submitted())
    assert refused.value.field == "name"
    assert store.find_run(retry.id) is None
    assert store.run_by_name(run.project, run.name).id == run.id

    # Another configuration under the name is a new run, as after any finished run.
    other, other_jobs = one_job_run(name=run.name)
    other.configuration = {"type": "task", "commands": ["eval"]}
    store.create_run(other, other_jobs, submitted())
    assert store.run_by_name(run.project, run.name).id == other.id
    store.close()


def test_once_the_retry_got_the_kept_run_the_same_submission_later_is_a_new_run(
    ports: tuple[int, int],
) -> None:
    primary, _ = ports
    store = _store(primary, acks=2)
    run = _refused_but_kept(store)
    store.min_replica_acks = 1
    store.forget_refusal(store.get_run(run.id))  # what the API does when it answers the retry
    _finish(store, run)
    again, again_jobs = one_job_run(name=run.name)
    store.create_run(again, again_jobs, submitted())
    assert store.run_by_name(run.project, run.name).id == again.id
    store.close()


def _finish(store: Store, run: Run) -> None:
    kept = store.get_run(run.id)
    kept.status = RunStatus.DONE
    assert store.save_run(kept)


def _refused_but_kept(store: Store) -> Run:
    """A run whose submission was refused (too few replicas) after a scheduling pass
    had already moved it, so it was kept."""
    run, jobs = one_job_run()
    # A scheduling pass moving the run while the API still waits for the replicas.
    worker = Store(store.r, prefix=store.p)
    moved = threading.Event()

    def move() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not moved.is_set():
            found = worker.find_run(run.id)
            if found is not None:
                found.status = RunStatus.PENDING
                if worker.save_run(found):
                    moved.set()
            time.sleep(0.005)

    thread = threading.Thread(target=move)
    thread.start()
    try:
        with pytest.raises(ReplicationError):
            store.create_run(run, jobs, submitted())
    finally:
        thread.join()
    assert moved.is_set()
    return run


def test_a_state_change_too_few_replicas_acknowledged_raises_and_is_not_undone(
    ports: tuple[int, int],
) -> None:
    primary, _ = ports
    store = _store(primary, acks=1)
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    store.min_replica_acks, store.replica_ack_timeout_ms = 2, _WAIT_MS
    run.status = RunStatus.PENDING
    # The caller (a worker's task) fails before acting, and retries from what is stored.
    with pytest.raises(ReplicationError, match="state change"):
        store.save_run(run)
    stored = store.get_run(run.id)
    assert (stored.status, stored.version) == (RunStatus.PENDING, run.version)
    store.close()


def test_without_a_replica_wait_a_lone_redis_takes_runs_as_before(ports: tuple[int, int]) -> None:
    primary, _ = ports
    store = _store(primary, acks=0)
    run, jobs = one_job_run()
    store.create_run(run, jobs, submitted())
    assert store.get_run(run.id).id == run.id
    store.close()
