"""Beat's orphan reaper, rule by rule, on the real apiserver and Redis of the calm world.

Each object is made by hand with the labels Berth's own carry, beside records written
straight to Redis and kept out of the set of active runs (so the stack's scheduler and
sweep, running meanwhile, never act on them). One pass must delete exactly the orphans:
a pod holding its node for a finished job, an ended pod whose job is gone, a finished
job's Secret, a Service with no unfinished run of its name; and keep a finished job's
ended pod (``berth logs`` reads it), a live job's Secret, a live run's Service.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared import kube
from shared.errors import KubeNotFound
from shared.state.records import Job, RunStatus
from shared.state.store import Store
from tests.factories import run_record
from tests.reliability.world import World
from workers import orphans as reaper

pytestmark = pytest.mark.integration

_NOWHERE = {"berth.test/no-such-node": "true"}  # unschedulable: stays Pending, off KWOK


def test_one_pass_deletes_exactly_the_orphans(calm_world: World) -> None:
    k, ns, store = calm_world.kube, calm_world.namespace, calm_world.ctx.store
    tag = uuid.uuid4().hex[:6]
    live_run, done_run = f"reap-live-{tag}", f"reap-done-{tag}"
    done_job, live_job, gone_job = f"jd-{tag}", f"jl-{tag}", f"jg-{tag}"
    _record_run(store, live_run, RunStatus.RUNNING)
    _record_job(store, done_job, done_run, RunStatus.DONE)
    _record_job(store, live_job, live_run, RunStatus.RUNNING)

    def labels(run: str, job: str | None = None) -> dict[str, str]:
        return kube.berth_labels("main", run, job)

    made = {
        "pod/holding-done": _pod(k, ns, f"holding-{tag}", labels(done_run, done_job)),
        "pod/ended-done": _pod(k, ns, f"ended-{tag}", labels(done_run, done_job), ended=True),
        "pod/ended-gone": _pod(k, ns, f"gone-{tag}", labels(done_run, gone_job), ended=True),
        "secret/done": _object(k, ns, "secret", f"sd-{tag}", labels(done_run, done_job)),
        "secret/live": _object(k, ns, "secret", f"sl-{tag}", labels(live_run, live_job)),
        "service/done": _object(k, ns, "service", f"vd-{tag}", labels(done_run)),
        "service/live": _object(k, ns, "service", f"vl-{tag}", labels(live_run)),
    }
    reaped = reaper.reap_orphans(calm_world.ctx)

    orphans = {"pod/holding-done", "pod/ended-gone", "secret/done", "service/done"}
    for what, name in made.items():
        kind = what.split("/")[0]
        # Beat's own pass may have come first: then the object is gone all the same.
        deleted = f"{kind}/{name}" in reaped or not _exists(k, ns, kind, name)
        assert deleted == (what in orphans), (what, reaped)


def _record_run(store: Store, name: str, status: RunStatus) -> None:
    run = run_record(name, status)
    store.r.hset(store.key("run", run.id), mapping={"v": 0, "d": run.model_dump_json()})
    store.r.set(store.key("runname", run.project, run.name), run.id)


def _record_job(store: Store, job_id: str, run_name: str, status: RunStatus) -> None:
    job = Job(id=job_id, run_id=f"id-{run_name}", project="main", run_name=run_name)
    job.status = status
    store.r.hset(store.key("job", job.id), mapping={"v": 0, "d": job.model_dump_json()})


def _pod(k: kube.Kube, ns: str, name: str, labels: dict[str, str], *, ended: bool = False) -> str:
    body = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": _NOWHERE,
            "containers": [{"name": "main", "image": "berth-test/none"}],
        },
    }
    k.call(k.core.create_namespaced_pod, ns, body)
    if ended:
        k.call(k.core.patch_namespaced_pod_status, name, ns, {"status": {"phase": "Succeeded"}})
    return name


def _object(k: kube.Kube, ns: str, kind: str, name: str, labels: dict[str, str]) -> str:
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels}}
    if kind == "service":
        body["spec"] = {"ports": [{"port": 80}], "clusterIP": "None"}
        k.call(k.core.create_namespaced_service, ns, body)
    else:
        k.call(k.core.create_namespaced_secret, ns, body)
    return name


def _exists(k: kube.Kube, ns: str, kind: str, name: str) -> bool:
    reader = {"pod": k.core.read_namespaced_pod, "secret": k.core.read_namespaced_secret}.get(
        kind, k.core.read_namespaced_service
    )
    try:
        obj = k.call(reader, name, ns)
    except KubeNotFound:
        return False
    return obj.metadata.deletion_timestamp is None
