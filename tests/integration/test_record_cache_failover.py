"""A process's record cache after a failover (a replica promoted), on real Redis.

Redis replicates asynchronously: the last writes a primary took may be lost when a
replica takes over, and a record written again on the new primary can reach the very
version number the cache holds for the lost write. The cache must not keep the lost
contents then. (A Sentinel fault test under heavy load once left 19 runs
"provisioning" for good after two failovers in a row: pods created and finished, jobs
never moved. This is one way that happens; the test fails without the fix.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.queueing.view import RecordCache
from shared.state.store import Store
from tests.factories import one_job_run, submitted
from tests.polling import wait_until
from tests.sentinel import replica_pair

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(primary, replica) ports, the replica in sync."""
    with replica_pair(tmp_path) as ports:
        yield ports


def test_a_record_rewritten_to_the_same_version_on_a_new_primary_is_read_afresh(
    pair: tuple[int, int],
) -> None:
    primary, replica = pair
    prefix = f"t{uuid.uuid4().hex[:8]}"
    old = Store.connect(f"redis://127.0.0.1:{primary}/0", prefix=prefix, timeout_s=5)
    new = Store.connect(f"redis://127.0.0.1:{replica}/0", prefix=prefix, timeout_s=5)
    try:
        run, jobs = one_job_run("aba")
        old.create_run(run, jobs, submitted())
        cache = RecordCache()
        [job] = cache.load(old).jobs[run.id]
        key = old.key("job", job.id)
        wait_until(lambda: new.r.hget(key, "v") is not None, timeout=10, what="replicated")
        # The replica takes over (as Sentinel makes it), with what it had.
        redis.Redis(port=replica).execute_command("REPLICAOF", "NO", "ONE")
        assert new.primary_id() != old.primary_id()
        # The same version number, other contents: the old primary's write lost, another
        # made on the new one.
        version = int(new.r.hget(key, "v") or 0)
        rewritten = job.model_copy(update={"pod_name": "written-on-the-new-primary"})
        new.r.hset(key, mapping={"v": version, "d": rewritten.model_dump_json()})
        [seen] = cache.load(new).jobs[run.id]
        assert seen.pod_name == "written-on-the-new-primary"
        assert seen.version == version
    finally:
        old.close()
        new.close()
