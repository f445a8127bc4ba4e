"""The scheduling pass: read the queue, let the pure core decide, write the decisions.

What is decided lives in :mod:`shared.queueing.planner` (order, fairness, quotas,
backfill, gangs); this module only feeds it and applies its answer:

- capacity is the inventory's free resources (pods Berth did not create)
  minus the placements of Berth's own jobs: a job's GPUs are taken from the
  moment it is placed, before its pod exists, until it finishes;
- the ResourceQuotas of each namespace with runs waiting are capacity too
  (:mod:`shared.queueing.namespace_quota` says how ``status.used`` and Berth's
  placements add up without counting a job twice); reads are cached briefly
  per process (:class:`shared.policy.resource_quotas.QuotaReader`);
- an admitted run's jobs are written all at once (:mod:`shared.queueing.commit`),
  so a gang is placed whole or not at all, then provisioned;
- a waiting run is ``pending`` with what it waits for and its position in its
  project's queue; an impossible one fails at once.

**Never promising a GPU twice.** Passes take a Redis lock, so normally one runs
at a time. The lock is only an economy: every placement is also fenced by the
capacity version (see :mod:`shared.queueing.commit`), so a pass that outlives
its lock, or any two passes run side by side, cannot both place on what only
one of them saw free; the loser reads again and re-plans. Placements belong to
jobs, so a pass that crashes leaves nothing to expire: what it placed is
provisioned (the sweep re-sends lost messages) and what it did not place was
never written.
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

import redis

from shared import tasks
from shared.errors import ConfigError, TemporaryError
from shared.gpu.inventory import GpuInventory
from shared.metrics import SCHEDULING_PASSES
from shared.placement.fleets import allowed_nodes, fleet_blocks, instance_nodes
from shared.placement.offers import Request
from shared.placement.placements import HOLDING
from shared.policy import access
from shared.policy.resource_quotas import QuotaReader, namespace_key, refusals
from shared.queueing import Admit, Fail, Holding, QueuedRun, Wait, keys, plan, positions
from shared.queueing.commit import CONFLICT, FENCED, Change, Writer
from shared.queueing.heads import QUEUED, QueueHeads, counted_whole, full_pass_due, queue_order
from shared.queueing.limits import NO_CAPACITY, waited_too_long
from shared.queueing.namespace_only import plan_namespace_only
from shared.queueing.namespace_quota import QuotaRoom, demand, room_for
from shared.queueing.share import normalise_quotas
from shared.queueing.view import RecordCache, RunFacts, View
from shared.state import cluster_health
from shared.state.inventory_store import load_inventory
from shared.state.lifecycle import can_move, run_status_from_jobs
from shared.state.records import Event, Job, Run, RunStatus
from shared.state.store import Store
from shared.volumes.volume_placement import berth_volume_nodes
from workers import cluster_fit, cluster_routes
from workers.context import WorkerContext

log = logging.getLogger(__name__)

_LOCK_WAIT_S = 10  # a second pass waits this long, then its message is retried
_FENCE_ATTEMPTS = 5  # re-plans after losing a race; each loss means another pass placed
_CLEANUP_GRACE_S = 60.0  # a requeue that crashed mid-cleanup stops blocking its run after this
_WRITE_BATCH = 1_000  # waiting-run updates per pipeline
# Placed jobs per provisioning message: one message per pass instead of one per job, and
# still several messages (so several workers) for a pass that places hundreds.
_PROVISION_BATCH = 32

# One record cache per store (per worker process in production, per context in tests).
_E = TypeVar("_E", Fail, Wait)

_caches: weakref.WeakKeyDictionary[Store, RecordCache] = weakref.WeakKeyDictionary()
# Likewise each namespace's last ResourceQuota read.
_quota_readers: weakref.WeakKeyDictionary[Store, QuotaReader] = weakref.WeakKeyDictionary()
# When this process last published the deep queue places (_publish_positions).
_published: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()
# When this process last wrote the places near the front into the reasons (monotonic).
_places_at: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()
# When this process's last full pass ended (monotonic; shared.queueing.heads).
_full_at: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()


@dataclass
class PassResult:
    placed: list[str] = field(default_factory=list)
    """Names of the runs placed, in the order they were."""
    waiting: int = 0
    failed: list[str] = field(default_factory=list)
    fenced: int = 0
    """Times this pass lost a race to another and planned again."""
    idle: bool = False
    """Nothing waited: no run wanted placement (``shared.queueing.wake.note_idle``)."""
    left_out: int = 0
    """Queued runs this pass did not decide: a quick pass (:mod:`shared.queueing.heads`)
    decides only the heads of the queues; 0 for a full pass."""
    heads_drained: bool = False
    """A quick pass left no head of some project waiting (all admitted or failed): runs
    it left out may start now too."""
    again_in_s: float | None = None
    """Run another pass within this many seconds even if nothing asks for one
    (:mod:`workers.scheduling_trigger`): after a quick pass that drained a project's
    heads (0), or that left out a run no pass has decided yet (when the full pass that
    decides it is due). None: only when asked."""

    @property
    def repeat_share(self) -> float:
        """The part of the runs this pass decided that it left waiting (1 when it decided
        none): what :mod:`workers.scheduling_trigger` counts against the passes' share.
        Deciding a run for the first time and placing it is work each run costs once;
        deciding again that a run waits is what a stream of passes repeats."""
        stayed = self.waiting - self.left_out
        decided = stayed + len(self.placed) + len(self.failed)
        return stayed / decided if decided else 1.0


def schedule_pass(ctx: WorkerContext) -> PassResult:
    """One pass under the scheduling lock."""
    store = ctx.store
    lock = store.r.lock(
        keys.lock_key(store),
        timeout=ctx.settings.scheduling.lock_ttl_s,
        blocking_timeout=_LOCK_WAIT_S,
    )
    with keys.wrapped():
        acquired = lock.acquire()
    if not acquired:
        raise TemporaryError("another scheduling pass is running", delay=1)
    try:
        return run_pass(ctx)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("the scheduling lock expired before release; placements stayed fenced")


def run_pass(ctx: WorkerContext) -> PassResult:
    """One pass without the lock: correct beside any other pass, only wasteful."""
    cache = record_cache(ctx.store)
    result = PassResult()
    started = time.monotonic()
    with _collector_paused():
        for _ in range(_FENCE_ATTEMPTS):
            view = cache.load(ctx.store, heads=_heads(ctx), whole=partial(_full_due, ctx))
            cut = _cut(view)
            result.left_out = sum(cut.values())
            if _apply(ctx, cache, view, result, cut=cut):
                if not cut:
                    _full_at[ctx.store] = time.monotonic()
                result.waiting += result.left_out
                result.again_in_s = _again_in(ctx, view, result)
                kind = "quick" if cut else "full"
                SCHEDULING_PASSES.labels(kind).observe(time.monotonic() - started)
                return result
            result.fenced += 1
            result.waiting, result.failed = 0, []
    raise TemporaryError("scheduling passes keep racing; retrying", delay=1)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a pass.

    A pass allocates tens of thousands of short-lived objects, which trigger full
    collections that walk every cached record: measured at 40% of a pass over
    10,000 waiting runs (bench/queue.py). The pass makes no reference cycles of
    its own (its temporaries die by reference counting), so deferring the
    collector to the end of the pass costs no memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _heads(ctx: WorkerContext) -> int:
    settings = ctx.settings.scheduling
    return max(settings.head_runs, settings.exact_positions)


def _full_due(ctx: WorkerContext, queue: QueueHeads) -> bool:
    settings = ctx.settings.scheduling
    return full_pass_due(
        queue,
        last_full_at=_full_at.get(ctx.store, float("-inf")),
        now=time.monotonic(),
        every_s=settings.full_pass_every_s,
        first_decision_s=settings.first_decision_s,
    )


def _cut(view: View) -> Mapping[str, int]:
    """Project -> its queued runs left out of ``view`` (empty: the view holds every run)."""
    return {} if view.whole or view.queue is None else view.queue.cut


def _again_in(ctx: WorkerContext, view: View, result: PassResult) -> float | None:
    if view.whole or view.queue is None:
        return None  # a full pass decided every run: the next request brings the next
    if result.heads_drained and (result.placed or result.failed):
        return 0.0  # the next heads may fit as well (a burst deeper than head_runs)
    if view.queue.unseen:
        since = time.monotonic() - _full_at.get(ctx.store, float("-inf"))
        return max(0.0, ctx.settings.scheduling.first_decision_s - since)
    return None


def record_cache(store: Store) -> RecordCache:
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = RecordCache()
    return cache


def quota_reader(ctx: WorkerContext) -> QuotaReader:
    reader = _quota_readers.get(ctx.store)
    if reader is None:
        settings = ctx.settings.scheduling
        reader = _quota_readers[ctx.store] = QuotaReader(
            ttl_s=settings.quota_ttl_s, forbidden_recheck_s=settings.quota_forbidden_recheck_s
        )
    return reader


# -- one decision ---------------------------------------------------------------------


def _apply(
    ctx: WorkerContext,
    cache: RecordCache,
    view: View,
    result: PassResult,
    *,
    cut: Mapping[str, int],
) -> bool:
    """Plan over ``view`` and write the plan; False when a placement was fenced off.

    ``cut``: project -> its queued runs a quick pass left out of ``view``.
    """
    if not any(_wants_placement(run, view.jobs[run.id]) for run in view.runs):
        # Nothing waits: no cluster to route to, inventory to read or plan to write.
        result.idle = True
        return True
    now = time.time()
    runs = {run.id: run for run in view.runs}
    cleaning = keys.timestamps(ctx.store, keys.CLEANUP)
    quotas = normalise_quotas({p.name: p.quotas for p in ctx.server.projects})
    fails: list[Fail] = []
    unanswered: dict[str, str] = {}
    routes, unrouted = cluster_routes.route(
        view, partial(_clusters_and_modes, ctx, unanswered), _cluster_ranks(ctx)
    )
    for run_id, error in unrouted.items():
        if runs[run_id].status in QUEUED:
            fails.append(Fail(run_id, runs[run_id].project, str(error)))
    writer = Writer(ctx.store)
    version = view.capacity_version
    refused: dict[str, float] | None = None
    down = cluster_health.unreachable(ctx.store, now=now)
    # Project quotas and shares count a project's holdings in every cluster.
    everywhere = list(_holdings(view.runs, view))
    deep: dict[str, tuple[int, int]] = {}  # run id -> its place, past exact_positions
    waiting_in: set[str] = set()  # projects with a run left waiting by this pass
    # Places near the front are written into the reasons at most every position_refresh_s.
    refresh_s = ctx.settings.scheduling.position_refresh_s
    places = time.monotonic() - _places_at.get(ctx.store, float("-inf")) >= refresh_s
    held_by: dict[str, list[Holding]] = {}
    for holding in everywhere:
        held_by.setdefault(holding.run_id, []).append(holding)

    def carried(entries: list[_E]) -> list[_E]:
        """The entries whose run has no other cluster to try (the rest move on)."""
        if not routes.later:  # every project has one cluster (the usual case)
            return entries
        return [e for e in entries if not routes.carry(runs[e.run_id])]

    for group in routes.in_order():
        members, names = group.members, group.names
        project, name = members[0].project, names[members[0].project]
        if group.mode == access.Mode.NONE:
            no_access = carried(_without_access(ctx, members, names))
            _wait(ctx, writer, runs, view.jobs, no_access, now, deep, places=places)
            result.waiting += len(no_access)
            waiting_in.update(w.project for w in no_access)
            continue
        namespace_only = group.mode == access.Mode.NAMESPACE
        if refused is None and any(r.status in QUEUED for r in members):
            refused = refusals(ctx.store)
        holdings = [h for run in members for h in held_by.get(run.id, ())]
        why = unanswered.get(group.cluster_key) or down.get(group.cluster_key)
        fit = cluster_fit.PassFit(unreachable=why)
        shunned: list[Wait] = []
        if why is not None:
            members, shunned = _around_unreachable(routes, members, names, why)
        # Namespace-only: no node is known, so none is read (the scheduler places).
        inventory = (
            GpuInventory()
            if namespace_only
            else cluster_fit.inventory_with_pools(
                ctx,
                project,
                load_inventory(ctx.store, ctx.clusters, project, name),
                [h.placement.node for h in holdings],
                fit=fit,
                cluster=name,
            )
        )
        volume_nodes = berth_volume_nodes(
            (r, view.jobs[r.id]) for r in members if cache.facts(r).mounts
        )
        # From the server config: a pass connects to a cluster only to read what it needs.
        # Namespace-only, the node selector is only the pod's (no nodes to narrow to).
        selecting = {
            p: not namespace_only
            and bool(ctx.server.backend_for(p, names[p]).pod_settings().node_selector)
            for p in {r.project for r in members}
        }
        queued: list[QueuedRun] = []
        held_out: list[Wait] = []
        # With volumes about, the queue's head must get an unused claim first (PassFit).
        in_order = sorted(members, key=queue_order) if volume_nodes else members
        for run in in_order:
            if not _wants_placement(run, view.jobs[run.id]):
                continue
            if now - cleaning.get(run.id, 0.0) < _CLEANUP_GRACE_S:
                continue  # a requeue is still deleting its old pods
            entry = _queued(
                ctx,
                cache,
                inventory,
                run,
                view.jobs[run.id],
                now,
                volume_nodes,
                selecting,
                fit,
                namespace_only=namespace_only,
                cluster=names[run.project],
            )
            if namespace_only and isinstance(entry, QueuedRun):
                facts = cache.facts(run)
                if facts.fleets:
                    entry = Fail(run.id, run.project, _NO_FLEETS)
                elif facts.instances:
                    entry = Fail(run.id, run.project, _NO_INSTANCES)
            if isinstance(entry, Fail):
                fails += carried([entry])
            elif isinstance(entry, Wait):
                held_out += carried([entry])
            elif entry is not None:
                queued.append(entry)
        # After the runs' own reads: an apiserver that did not answer them is not
        # asked again for quotas this pass (fit.unreachable).
        rooms = (
            {}
            if fit.unreachable
            else _namespace_rooms(ctx, cache, view, group, members, held_by, refused or {})
        )
        member_ids = {r.id for r in members}
        decided = (
            plan_namespace_only(queued, holdings, rooms=rooms)
            if namespace_only
            else plan(
                inventory,
                queued,
                holdings,
                quotas=quotas,
                max_reservations=ctx.settings.scheduling.max_reservations,
                rooms=rooms,
                elsewhere=[h for h in everywhere if h.run_id not in member_ids],
            )
        )
        version = _admit(ctx, writer, runs, view.jobs, decided.admits, version, names, result)
        if version == FENCED:
            return False
        fails += carried(decided.fails)
        waits = counted_whole(carried(decided.waits), cut) + held_out + shunned
        _wait(ctx, writer, runs, view.jobs, waits, now, deep, places=places)
        result.waiting += len(waits)
        waiting_in.update(w.project for w in waits)
    # A running service's added replica that no node can take fails nothing: the
    # service keeps serving on the replicas it has, and says why it cannot grow.
    growing = [f for f in fails if runs[f.run_id].status == RunStatus.RUNNING]
    _wait(
        ctx, writer, runs, view.jobs, [_cannot_grow(f) for f in growing], now, deep, places=places
    )
    for fail in fails:
        if fail in growing:
            continue
        _fail(writer, runs[fail.run_id], view.jobs[fail.run_id], fail.reason)
        result.failed.append(runs[fail.run_id].name)
    result.heads_drained = any(project not in waiting_in for project in cut)
    if not cut:  # a quick pass knows only the heads' places
        _publish_positions(ctx, deep, now)
    if places:
        _places_at[ctx.store] = time.monotonic()
    return True


def _cannot_grow(fail: Fail) -> Wait:
    return Wait(fail.run_id, fail.project, f"a replica cannot be added: {fail.reason}", 0, 0)


_NO_FLEETS = (
    "fleets need node reads, and this backend runs in namespace-only mode (berth status"
    " says why); remove fleets: to let the kube-scheduler place the run"
)
_NO_INSTANCES = (
    "instances need node reads, and this backend runs in namespace-only mode (berth status"
    " says why); remove instances: to let the kube-scheduler place the run"
)


def _clusters_and_modes(
    ctx: WorkerContext, unanswered: dict[str, str], project: str
) -> list[tuple[str, cluster_routes.GroupKey]]:
    """Each of the project's clusters: its name, its key and what Berth may do there
    (see :mod:`shared.policy.access`).

    A review the apiserver did not answer is noted in ``unanswered`` (cluster key ->
    why), so the pass asks that cluster nothing more: one call per pass, not one per
    read. A kubeconfig that does not load is left to the pass's reads, which hold
    that project's runs with the reason (it is not this run's fault).
    """
    out = []
    for name in ctx.clusters.names_of(project):
        key = ctx.clusters.key_for(project, name)
        try:
            found = ctx.access_in(project, name)
        except ConfigError:
            out.append((name, (key, access.Mode.CLUSTER)))
            continue
        if found.unanswered is not None:
            unanswered[key] = found.unanswered
        out.append((name, (key, found.mode)))
    return out


def _around_unreachable(
    routes: cluster_routes.Routes, members: list[Run], names: Mapping[str, str], why: str
) -> tuple[list[Run], list[Wait]]:
    """A cluster whose apiserver is away: runs with another cluster to try go there
    now; runs carried here from a full one wait instead of being placed where they
    cannot start. The rest (pinned runs, and runs of projects with this one cluster)
    are planned as always: what is placed starts once the apiserver is back."""
    kept: list[Run] = []
    waits: list[Wait] = []
    for run in members:
        if routes.carry(run):
            continue
        if run.id in routes.moved and run.status in QUEUED:
            cause = f"waiting for capacity: cluster {names[run.project]} does not answer ({why})"
            waits.append(Wait(run.id, run.project, cause, position=0, queued=0))
            continue
        kept.append(run)
    return kept, waits


def _cluster_ranks(ctx: WorkerContext) -> dict[str, int]:
    """Cluster key -> the order the server config first names it: the order runs try them."""
    ranks: dict[str, int] = {}
    for item in ctx.server.projects:
        for backend in item.backends:
            for cluster in backend.clusters():
                ranks.setdefault(cluster.cluster_key(), len(ranks))
    return ranks


def _without_access(ctx: WorkerContext, members: list[Run], names: Mapping[str, str]) -> list[Wait]:
    """Runs of backends where Berth may not even create pods wait, saying why."""
    waits = []
    for run in members:
        if run.status not in QUEUED or run.stop_requested:
            continue
        found = ctx.access_in(run.project, names[run.project])
        cause = f"waiting for access to the cluster: {found.reason}"
        waits.append(Wait(run.id, run.project, cause, position=0, queued=0))
    return waits


def _holdings(runs: Iterable[Run], view: View) -> Iterable[Holding]:
    for run in runs:
        for job in view.jobs[run.id]:
            if job.status in HOLDING and job.placement is not None:
                yield Holding(run.project, job.placement, run.id)


def _namespace_rooms(
    ctx: WorkerContext,
    cache: RecordCache,
    view: View,
    group: cluster_routes.Group,
    members: list[Run],
    held_by: Mapping[str, list[Holding]],
    refused: Mapping[str, float],
) -> dict[str, QuotaRoom]:
    """Project -> what its namespace's quotas leave; read only where runs wait."""
    by_namespace: dict[str, list[Run]] = {}
    namespace_of: dict[str, str] = {}
    for run in members:
        namespace = namespace_of.get(run.project)
        if namespace is None:
            backend = ctx.server.backend_for(run.project, group.names[run.project])
            namespace = namespace_of[run.project] = backend.namespace
        by_namespace.setdefault(namespace, []).append(run)
    rooms: dict[str, QuotaRoom] = {}
    for namespace, runs in by_namespace.items():
        if not any(r.status in QUEUED and not r.stop_requested for r in runs):
            continue  # nothing to admit there: no read
        key = namespace_key(group.cluster_key, namespace)
        holding = [
            (run, job)
            for run in runs
            if run.id in held_by  # a few hundred running of 10,000 waiting
            for job in view.jobs[run.id]
            if job.status in HOLDING and job.placement is not None
        ]
        try:
            read = quota_reader(ctx).read(
                key,
                partial(ctx.clusters.for_project, runs[0].project, group.names[runs[0].project]),
                counted=frozenset(j.id for _, j in holding if j.pod_name),
                refused_at=refused.get(key, 0.0),
            )
        except ConfigError:
            continue  # a kubeconfig that does not load: its runs are held, saying why
        if read is None:
            continue
        uncounted = (
            demand(job.placement, memory_limit_bytes=cache.facts(run).memory_limit_bytes)
            for run, job in holding
            if job.placement is not None and job.id not in read.counted
        )
        room = room_for(read.quotas, uncounted)
        if room is not None:
            rooms.update(dict.fromkeys({r.project for r in runs}, room))
    return rooms


def _wants_placement(run: Run, jobs: list[Job]) -> bool:
    """A queued run, or a running service with replicas ``scaling`` added."""
    if run.stop_requested:
        return False
    if run.status in QUEUED:
        return True
    return run.status == RunStatus.RUNNING and any(j.status in QUEUED for j in jobs)


def _queued(
    ctx: WorkerContext,
    cache: RecordCache,
    inventory: GpuInventory,
    run: Run,
    jobs: list[Job],
    now: float,
    volume_nodes: Mapping[tuple[str, str], frozenset[str]],
    selecting: Mapping[str, bool],
    fit: cluster_fit.PassFit,
    *,
    namespace_only: bool = False,
    cluster: str | None = None,
) -> QueuedRun | Fail | Wait | None:
    facts = cache.facts(run)
    if facts.error:
        return Fail(run.id, run.project, facts.error)
    # A running service's added replica waits for room: failing would stop the service.
    if NO_CAPACITY in facts.limits.retry_on and run.status in QUEUED:
        too_long = waited_too_long(facts.limits, submitted_at=run.submitted_at, now=now)
        if too_long:
            return Fail(run.id, run.project, too_long)
    # Most runs wait unchanged from pass to pass: reuse what they meant last time.
    stamp = (
        (run.version, jobs[0].version)
        if len(jobs) == 1
        else (run.version, *[j.version for j in jobs])
    )
    # Fleets, volumes and the node selector depend on more than the run's own
    # records (other runs' placements, claims, node labels): decided afresh.
    # Namespace-only: no node to narrow to; the kube-scheduler follows claims and selectors.
    narrows = not namespace_only and (selecting[run.project] or bool(facts.mounts))
    if not facts.fleets and not facts.instances and not narrows:
        known = cache.derived(run.id, stamp)
        if isinstance(known, QueuedRun):
            return known
    to_place = [j for j in jobs if j.status in QUEUED]
    held = frozenset(j.placement.node for j in jobs if j.status in HOLDING and j.placement)
    if not to_place or (held and facts.request.nodes > 1):
        return None  # a gang with a member still placed: the sweep sends it all back first
    request = facts.request
    if facts.fleets:
        try:
            allowed = allowed_nodes(ctx.store, inventory, run.project, list(facts.fleets))
            blocks = fleet_blocks(ctx.store, run.project, list(facts.fleets))
        except ConfigError as e:
            return Fail(run.id, run.project, str(e))
        request = replace(request, allowed_nodes=allowed, blocks=blocks)
    if facts.instances and not namespace_only:
        try:
            pinned = instance_nodes(ctx.store, inventory, run.project, facts.instances)
        except ConfigError as e:
            return Fail(run.id, run.project, str(e))
        before = request.allowed_nodes
        request = replace(request, allowed_nodes=pinned if before is None else before & pinned)
    if narrows:
        narrowed = cluster_fit.narrow_request(
            ctx, run, request, inventory, berth_nodes=volume_nodes, fit=fit, cluster=cluster
        )
        if isinstance(narrowed, cluster_fit.Blocked):
            # Volumes whose nodes exclude each other never fit; a claim in use elsewhere frees up.
            if narrowed.permanent:
                return Fail(run.id, run.project, narrowed.reason)
            return Wait(run.id, run.project, narrowed.reason, position=0, queued=0)
        request = narrowed
    entry = QueuedRun(
        run_id=run.id,
        project=run.project,
        priority=run.priority,
        submitted_at=run.submitted_at,
        request=request,
        jobs=len(to_place),
        held_nodes=held,
        memory_limit_bytes=facts.memory_limit_bytes,
        job_requests=_job_requests(facts, request, to_place),
    )
    cache.remember(run.id, stamp, entry)
    return entry


def _job_requests(facts: RunFacts, request: Request, to_place: list[Job]) -> tuple[Request, ...]:
    """Per job, its group's request narrowed as the run's was (fleets, instances, volumes);
    () when the run's groups ask the same (``request`` then speaks for every job)."""
    if not facts.group_requests:
        return ()
    return tuple(
        replace(
            facts.group_requests[str(j.group)],
            allowed_nodes=request.allowed_nodes,
            blocks=request.blocks,
        )
        for j in to_place
    )


def _admit(
    ctx: WorkerContext,
    writer: Writer,
    runs: Mapping[str, Run],
    jobs: Mapping[str, list[Job]],
    admits: list[Admit],
    version: int,
    names: Mapping[str, str],
    result: PassResult,
) -> int:
    """Write the admissions in one go, fenced in turn, and send their jobs to be
    provisioned; the capacity version after them, or FENCED."""
    changes = [
        _admission(ctx, runs[a.run_id], jobs[a.run_id], a, names[runs[a.run_id].project])
        for a in admits
    ]
    placed: list[str] = []
    outcomes = writer.write_in_turn(changes, fence=version)
    for change, outcome in zip(changes, outcomes, strict=True):
        assert change.run is not None
        if outcome == CONFLICT:
            log.info(
                "run %s changed while being placed; the next pass looks again", change.run.name
            )
        elif outcome > 0:
            version = outcome
            result.placed.append(change.run.name)
            placed += [job.id for job in change.jobs]
    # What was written is provisioned even when a later write was fenced off.
    for start in range(0, len(placed), _PROVISION_BATCH):
        tasks.send(ctx.celery, tasks.PROVISION_JOBS, *placed[start : start + _PROVISION_BATCH])
    return FENCED if FENCED in outcomes else version


def _admission(ctx: WorkerContext, run: Run, jobs: list[Job], admit: Admit, cluster: str) -> Change:
    """The run and its jobs as placed by ``admit``, with their events."""
    now = time.time()
    placed: list[Job] = []
    events = []
    to_place = [j for j in jobs if j.status in QUEUED]
    several = len(ctx.clusters.names_of(run.project)) > 1
    where = f" in cluster {cluster}" if several else ""
    for job, placed_at in zip(to_place, admit.placements, strict=True):
        placement = placed_at.model_copy(update={"cluster": cluster})
        new = job.model_copy(update={"status": RunStatus.PROVISIONING, "placement": placement})
        new.reason = ""
        placed.append(new)
        gpus = f"{placement.gpus} GPU" + (", borrowed quota" if admit.borrowed else "")
        events.append(
            Event(
                at=now,
                kind="status",
                status=RunStatus.PROVISIONING,
                job=job.job_num,
                message=f"job {job.job_num} placed on {placement.node}{where} ({gpus})",
            )
        )
    by_id = {j.id: j for j in placed}
    after = [by_id.get(j.id, j) for j in jobs]
    new_run = run.model_copy()
    status = run_status_from_jobs((j.status for j in after), stop_requested=run.stop_requested)
    if status != run.status and can_move(run.status, status):
        new_run.status = status
        new_run.reason = ""
        events.append(Event(at=now, kind="status", status=status, message=f"run {status}"))
    elif run.status == RunStatus.RUNNING:
        new_run.reason = ""  # a service's added replica is placed: it waits no more
    first = len(placed) == len(jobs)
    return Change(run=new_run, jobs=placed, events=events, admitted_at=now if first else None)


def _wait(
    ctx: WorkerContext,
    writer: Writer,
    runs: dict[str, Run],
    jobs: dict[str, list[Job]],
    waits: list[Wait],
    now: float,
    deep: dict[str, tuple[int, int]],
    *,
    places: bool,
) -> None:
    """Record why each run waits and where it stands, writing only what moved.

    A place past ``exact_positions`` is not written into the run's reason (it shifts
    on nearly every admission); it goes into ``deep``, which the pass publishes
    (:mod:`shared.queueing.positions`). A place near the front is written when
    ``places`` (at most every ``position_refresh_s``) or with a new cause: at depth
    passes come many times a second, and each admission moves every place.
    """
    exact = ctx.settings.scheduling.exact_positions
    changes: list[Change] = []
    for wait in waits:
        run = runs[wait.run_id]
        waiting = run.status in (RunStatus.PENDING, RunStatus.SUBMITTED)
        if waiting and wait.position > exact:
            deep[run.id] = (wait.position, wait.queued)
            reason = wait.cause
        else:
            reason = wait.reason
        if run.status == RunStatus.PENDING and (
            run.reason == reason or (not places and _same_cause(run.reason, wait.cause))
        ):
            continue  # nothing moved (the usual case deep in a long queue), or only its place
        new_jobs = [
            job.model_copy(update={"status": RunStatus.PENDING, "reason": wait.cause})
            for job in jobs[run.id]
            if job.status in QUEUED and (job.status, job.reason) != (RunStatus.PENDING, wait.cause)
        ]
        if run.status == RunStatus.RUNNING and run.reason == reason and not new_jobs:
            continue  # a service's added replica still waits, for the same reason
        new_run = run.model_copy(update={"reason": reason})
        events = []
        if run.status == RunStatus.SUBMITTED:
            new_run.status = RunStatus.PENDING
            events.append(
                Event(
                    at=now,
                    kind="status",
                    status=RunStatus.PENDING,
                    message=f"pending: {wait.cause}",
                )
            )
        changes.append(Change(run=new_run, jobs=new_jobs, events=events))
    for start in range(0, len(changes), _WRITE_BATCH):
        writer.write_many(changes[start : start + _WRITE_BATCH])


def _same_cause(stored: str, cause: str) -> bool:
    """Whether a stored reason says ``cause``, with or without a place after it."""
    return stored == cause or stored.startswith(f"{cause}; position ")


def _publish_positions(ctx: WorkerContext, deep: dict[str, tuple[int, int]], now: float) -> None:
    """Publish the deep places of this pass, at most every ``position_refresh_s`` per
    process: between two, a place shown may be that many seconds old."""
    every = ctx.settings.scheduling.position_refresh_s
    if now - _published.get(ctx.store, float("-inf")) < every:
        return
    positions.publish(ctx.store, deep, every_s=every)
    _published[ctx.store] = now


def _fail(writer: Writer, run: Run, jobs: list[Job], reason: str) -> None:
    now = time.time()
    failed = [
        job.model_copy(update={"status": RunStatus.FAILED, "reason": reason})
        for job in jobs
        if can_move(job.status, RunStatus.FAILED)
    ]
    new_run = run.model_copy(update={"reason": reason})
    events = []
    if can_move(run.status, RunStatus.FAILED):
        new_run.status = RunStatus.FAILED
        events.append(Event(at=now, kind="status", status=RunStatus.FAILED, message=reason))
    writer.write(Change(run=new_run, jobs=failed, events=events, forget_admission=True))
