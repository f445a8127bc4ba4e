"""A service's SGLang router replica, kept told which worker replicas are ready.

dstack's ``router: {type: sglang}`` on a replica group: that group's one replica
runs the SGLang router (the user's commands start it), Berth's proxy sends the
service's requests to it alone (``api/routes/proxy.py``), and the router sends
them on to the workers it knows. Berth keeps that list right, as dstack's server
does: every few seconds (beat, :data:`workers.celery_app.SCALING_EVERY_S`) the
router's ``GET /workers`` is compared with the other groups' running, ready
replicas, and the difference is sent as ``POST /workers`` (``url``,
``worker_type``: ``prefill``/``decode`` from the group's
``--disaggregation-mode``, else ``regular``; ``bootstrap_port`` from
``--disaggregation-bootstrap-port``) and ``DELETE /workers/<id>``. The calls go
through the apiserver's pod proxy (:mod:`shared.kube.pod_proxy`), so they work
wherever Berth's workers run. Running it twice changes nothing the first did not.

``dynamo`` routers find their workers themselves (etcd/NATS on the router's pod);
Berth only gives the workers the router's address (``workers/provisioning.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.configuration.groups import router_group, stored_router
from shared.configuration.parse import configuration_from_stored
from shared.configuration.runs import ServiceConfiguration
from shared.errors import BerthError, NotFoundError
from shared.kube.pod_proxy import pod_request
from shared.state.records import Job, Run, RunStatus
from workers.context import WorkerContext

log = logging.getLogger(__name__)

_MODE = re.compile(r"--disaggregation-mode[= ]+(prefill|decode)\b")
_BOOTSTRAP = re.compile(r"--disaggregation-bootstrap-port[= ]+(\d+)\b")


def sync_routers(ctx: WorkerContext) -> None:
    """Bring every running service's SGLang router up to date with its workers."""
    for run in ctx.store.active_runs_of("service"):
        found = stored_router(run.configuration)
        if found is None or found[1] != "sglang" or run.stop_requested:
            continue
        try:
            sync_router(ctx, run)
        except NotFoundError:
            continue  # deleted since the listing
        except BerthError as e:  # the router not listening yet, the apiserver away: next time
            log.info("cannot update the router of service %s now: %s", run.name, e)


def sync_router(ctx: WorkerContext, run: Run) -> tuple[list[str], list[str]] | None:
    """Add and remove workers at ``run``'s router; (added urls, removed ids), or None
    while the router replica is not running."""
    conf = configuration_from_stored(run.configuration)
    group = router_group(conf)
    if not isinstance(conf, ServiceConfiguration) or group is None:
        return None
    jobs = ctx.store.jobs_of(run)
    router = next((j for j in jobs if j.group == group.name and _serving(j) and j.pod_name), None)
    if router is None or router.pod_name is None:
        return None
    cluster = ctx.clusters.for_job(router)
    k, namespace, pod, port = cluster.kube, cluster.namespace, router.pod_name, int(conf.port)
    wanted = desired_workers(conf, jobs, router_group_name=str(group.name), port=port)
    add, remove = reconcile(pod_request(k, namespace, pod, port, "GET", "workers"), wanted)
    for worker in add:
        pod_request(k, namespace, pod, port, "POST", "workers", worker)
        log.info("service %s: worker %s added to its router", run.name, worker["url"])
    for worker_id in remove:
        pod_request(k, namespace, pod, port, "DELETE", f"workers/{worker_id}")
        log.info("service %s: worker %s removed from its router", run.name, worker_id)
    return [w["url"] for w in add], remove


def desired_workers(
    conf: Any, jobs: Iterable[Job], *, router_group_name: str, port: int
) -> list[dict[str, Any]]:
    """The router's workers as they should be: the other groups' ready replicas. Pure."""
    kinds = {str(g.name): _worker_kind(g.commands) for g in conf.groups}
    wanted = []
    for job in jobs:
        if job.group == router_group_name or not _serving(job) or not job.pod_ip:
            continue
        worker_type, bootstrap = kinds.get(str(job.group), ("regular", None))
        worker: dict[str, Any] = {"url": f"http://{job.pod_ip}:{port}", "worker_type": worker_type}
        if bootstrap is not None:
            worker["bootstrap_port"] = bootstrap
        wanted.append(worker)
    return sorted(wanted, key=lambda w: str(w["url"]))


def reconcile(listed: Any, wanted: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(workers to add, ids to remove) to turn the router's ``GET /workers`` answer into
    ``wanted``. Pure. URLs compare without a trailing slash, as routers store either."""
    current = _listed_workers(listed)
    have = {_norm(str(w.get("url", ""))) for w in current}
    want = {_norm(str(w["url"])) for w in wanted}
    add = [w for w in wanted if _norm(str(w["url"])) not in have]
    remove = [
        str(w.get("id") or w.get("url"))
        for w in current
        if _norm(str(w.get("url", ""))) not in want
    ]
    return add, remove


def _listed_workers(listed: Any) -> list[Mapping[str, Any]]:
    workers = listed.get("workers", []) if isinstance(listed, dict) else listed or []
    return [w for w in workers if isinstance(w, dict)]


def _worker_kind(commands: Iterable[str]) -> tuple[str, int | None]:
    text = "\n".join(commands)
    mode = _MODE.search(text)
    if mode is None:
        return "regular", None
    bootstrap = _BOOTSTRAP.search(text)
    port = int(bootstrap.group(1)) if bootstrap and mode.group(1) == "prefill" else None
    return mode.group(1), port


def _serving(job: Job) -> bool:
    return job.status == RunStatus.RUNNING and not job.retired and job.ready is not False


def _norm(url: str) -> str:
    return url.rstrip("/")
