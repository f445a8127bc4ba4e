"""Beat's level-triggered safety net, and the queue's clocks.

Every few seconds, over every active run (read through the scheduler's record
cache, so 10,000 waiting runs cost a version check each, not a parse):

- re-sync every job that holds or awaits a pod (a missed pod event costs
  seconds, not a stuck run): every sweep while no proxy worker follows pods,
  and each job about once a minute while one does (:mod:`workers.pod_follow`
  applies pod states as they happen; a read per running job every few seconds
  was a steady load on the apiserver), re-send provisioning for jobs placed but without
  a pod, re-send teardown for stopping jobs; each only if no such message
  already waits in the queue, so dead workers do not make the queue grow;
- send a gang back to the queue when a member lost its placement or its pods
  are not all Running within ``scheduling.gang_ready_timeout_s``;
- stop runs past ``max_duration`` or, for dev environments, past
  ``inactivity_duration`` (see :mod:`shared.queueing.limits`);
- run a scheduling pass if anything waits, so pending runs never depend on a
  single wake-up message (again only if its last wake-up has started); and
  forget the queue's notes about finished runs.
"""

from __future__ import annotations

import logging
import time
import zlib

from shared import tasks
from shared.clusters import run_clusters
from shared.errors import BerthError, StoreError
from shared.placement.autoscaling import find_pool, is_pool_node
from shared.policy import access
from shared.queueing import keys
from shared.queueing.limits import gang_not_ready, time_is_up
from shared.state.jobs import refresh_run, status_behind
from shared.state.records import Job, Run, RunStatus
from workers import requeue
from workers.celery_app import SWEEP_EVERY_S
from workers.context import WorkerContext
from workers.pod_follow import is_following
from workers.scheduling import record_cache

log = logging.getLogger(__name__)

FOLLOWED_SYNC_EVERY_S = 300.0
"""How often each placed job is re-read while the proxy worker follows pods, seconds: a
safety net only (the watch relists after any gap and reports every pod again, and an
application that fails sends its own ``sync_job``). Each is a GET of the pod: at 60 s,
1,000 running jobs cost 17 reads a second for ever (bench scenario 7's worker log)."""
_FOLLOWED_SYNC_SLOTS = int(FOLLOWED_SYNC_EVERY_S // SWEEP_EVERY_S)
PROVISION_STUCK_S = 30.0  # a placed job with no pod after this gets its message again
# The sweep's own wake-up of the scheduler: other senders (submissions, the
# inventory) do not coalesce, so a lost one may only delay a pass this long.
WAKE_HOLD_S = 15


def sweep(ctx: WorkerContext) -> None:
    store = ctx.store
    now = time.time()
    cache = record_cache(store)
    view = cache.load(store)
    ids = [run.id for run in view.runs]
    admitted = keys.timestamps(store, keys.ADMITTED)
    activity = keys.timestamps(store, keys.ACTIVITY)
    pending = False
    resends: list[tuple[str, str]] = []
    no_access: dict[tuple[str, str | None], str | None] = {}
    following = _following(ctx)
    for run in view.runs:
        jobs = view.jobs[run.id]
        pending |= any(j.status in (RunStatus.SUBMITTED, RunStatus.PENDING) for j in jobs)
        if not run.stop_requested and _enforce_limits(
            ctx, run, jobs, admitted.get(run.id), activity.get(run.id), now
        ):
            continue
        if status_behind(run, jobs) is not None:
            # Its own write was lost (a failover), or comes in a moment: either way,
            # nothing else would look at a run whose jobs have all ended.
            refresh_run(store, run.id)
        blocked = _no_access(ctx, run.project, run_clusters(jobs)[0], no_access)
        _show_no_access(ctx, run, blocked)
        if blocked is None:
            resends += _resends(run, jobs, now, following=following)
    tasks.send_unqueued(ctx.celery, ctx.store, resends, hold_s=tasks.RESEND_HOLD_S)
    if pending:
        tasks.send_unqueued(
            ctx.celery, ctx.store, [(tasks.SCHEDULE_RUN, "sweep")], hold_s=WAKE_HOLD_S
        )
    keys.forget(store, keys.known_runs(store) - set(ids))


def _enforce_limits(
    ctx: WorkerContext,
    run: Run,
    jobs: list[Job],
    admitted_at: float | None,
    active_at: float | None,
    now: float,
) -> bool:
    """Requeue or stop ``run`` if one of its clocks ran out; True if it did."""
    since, timeout = _gang_clock(ctx, run, jobs, admitted_at)
    why = gang_not_ready(jobs, admitted_at=since, now=now, timeout_s=timeout)
    if why is not None:
        log.info("run %s goes back to the queue: %s", run.name, why)
        requeue.requeue_run(ctx, run.id, why)
        return True
    if run.status not in (RunStatus.PROVISIONING, RunStatus.RUNNING):
        return False
    limits = record_cache(ctx.store).facts(run).limits
    why = time_is_up(
        limits, kind=run.configuration_type, admitted_at=admitted_at, active_at=active_at, now=now
    )
    if why is None:
        return False
    log.info("stopping run %s: %s", run.name, why)
    return requeue.stop_for_limit(ctx, run, jobs, why)


def _gang_clock(
    ctx: WorkerContext, run: Run, jobs: list[Job], admitted_at: float | None
) -> tuple[float | None, float]:
    """When the gang's deadline starts, and how long it is.

    A member placed on a node an autoscaler pool has yet to add cannot be
    Running before that node exists: while one waits, the pool's
    ``scale_up_timeout`` (judged per job by :mod:`workers.node_pools`) is added
    to the deadline, and once the last such node joins the gang gets its full
    deadline again from that moment.
    """
    timeout = ctx.settings.scheduling.gang_ready_timeout_s
    placements = [j.placement for j in jobs if j.placement is not None]
    joined = [p.joined_at for p in placements if p.joined_at is not None]
    since = max([admitted_at, *joined]) if admitted_at is not None else None
    waiting = [p.node for p in placements if is_pool_node(p.node)]
    if waiting:
        where = run_clusters(jobs)[0]
        pools = ctx.clusters.for_project(run.project, where).backend.node_pools
        timeout += max(
            (p.scale_up_timeout for n in waiting if (p := find_pool(pools, n))), default=0
        )
    return since, timeout


_NO_ACCESS = "cluster access lost: "


def _no_access(
    ctx: WorkerContext,
    project: str,
    cluster: str | None,
    known: dict[tuple[str, str | None], str | None],
) -> str | None:
    """Why Berth may not even read the project's pods in the run's cluster (access
    ``none``), or None.

    Then every sync would be one more forbidden call, every few seconds: nothing is
    sent, jobs keep their state until the operator's fix is seen
    (``kube.access_recheck_s``), and the run and ``berth status`` say why.
    """
    key = (project, cluster)
    if key not in known:
        try:
            found = ctx.access_in(project, cluster)
            known[key] = found.reason if found.mode == access.Mode.NONE else None
        except BerthError:
            known[key] = None  # not known: act as before
    return known[key]


def _show_no_access(ctx: WorkerContext, run: Run, why: str | None) -> None:
    """An active run's reason names the lost access while it lasts, and no longer after
    (compare-and-set, one try: the next sweep tries again)."""
    if run.status not in (RunStatus.PROVISIONING, RunStatus.RUNNING, RunStatus.TERMINATING):
        return
    if why is None:
        if not run.reason.startswith(_NO_ACCESS):
            return
        wanted = ""
    else:
        wanted = f"{_NO_ACCESS}{why}"
        if run.reason == wanted:
            return
    # A copy: the view's records are the scheduler cache's and must stay as stored.
    ctx.store.save_run(run.model_copy(update={"reason": wanted}))


def _resends(run: Run, jobs: list[Job], now: float, *, following: bool) -> list[tuple[str, str]]:
    """The (task, job id) messages this run's jobs should have in flight."""
    out = []
    for job in jobs:
        if job.status == RunStatus.PROVISIONING and job.pod_name is None:
            if now - job.updated_at > PROVISION_STUCK_S:
                out.append((tasks.PROVISION_JOB, job.id))
        elif job.status in (RunStatus.PROVISIONING, RunStatus.RUNNING):
            if not following or _sync_due(job.id, now):
                out.append((tasks.SYNC_JOB, job.id))
        elif job.status == RunStatus.TERMINATING:
            out.append((tasks.TEARDOWN_JOB, job.id))
    if run.stop_requested and not run.status.is_finished:
        out += [(tasks.TEARDOWN_JOB, job_id) for job_id in run.job_ids]
    return out


def _following(ctx: WorkerContext) -> bool:
    try:
        return is_following(ctx.store)
    except StoreError:
        return False


def _sync_due(job_id: str, now: float) -> bool:
    """Whether this sweep re-syncs the job while pods are followed: each job falls due
    once per ``FOLLOWED_SYNC_EVERY_S``, spread by its id so they do not all come at once."""
    slot = int(now // SWEEP_EVERY_S) % _FOLLOWED_SYNC_SLOTS
    return zlib.crc32(job_id.encode()) % _FOLLOWED_SYNC_SLOTS == slot
