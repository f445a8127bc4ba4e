"""An in-process Berth with a server config of the test's own, on the real local cluster.

The session stack has one server config; volumes on hostPath, pod settings and
autoscaling pools need others. A :class:`FitWorld` builds a
:class:`~workers.context.WorkerContext` with its own config file (pointing at
the local cluster's kubeconfig), its own namespace and its own Redis prefix, so
no worker of the stack ever sees its messages, and calls the plain functions
directly: ``submit_run`` as the API does, then :meth:`FitWorld.place`, which is
the scheduling pass's work for one run *with the cluster-fit wiring*
(``workers.cluster_fit``), then ``provision_job`` and ``sync_job``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from api.services import runs as run_service
from cli.local.cluster import ClusterState
from shared import kube, placements
from shared.configuration.parse import configuration_from_stored
from shared.inventory_store import load_inventory
from shared.jobs import refresh_run
from shared.queueing import Holding, Plan, QueuedRun, plan
from shared.records import Job, Project, Run, RunStatus, User
from shared.requests import request_for
from shared.settings import RedisSettings, Settings
from shared.store import token_sha256
from shared.volume_placement import berth_volume_nodes
from workers import cluster_fit, provisioning
from workers.context import WorkerContext, build_context

PROJECT = "fit"


@dataclass
class FitWorld:
    ctx: WorkerContext
    namespace: str
    kube: kube.Kube

    @property
    def store(self) -> Any:
        return self.ctx.store

    def submit(self, configuration: str) -> Run:
        project = self.ctx.store.get_project(PROJECT)
        user = self.ctx.store.get_user("fitter")
        assert project is not None and user is not None
        run, _ = run_service.submit_run(
            self.ctx.store,
            self.ctx.celery,
            project=project,
            user=user,
            configuration=configuration,
            clusters=self.ctx.clusters,
        )
        return run

    def place(self, run: Run) -> Plan:
        """Decide ``run`` as the scheduling pass does, and write and provision an admit."""
        store = self.ctx.store
        active = placements.active_runs(store)
        holdings = [
            Holding(r.project, j.placement)
            for r, jobs in active
            for j in jobs
            if j.status in placements.HOLDING and j.placement is not None
        ]
        inventory = load_inventory(store, self.ctx.clusters, PROJECT)
        inventory = cluster_fit.inventory_with_pools(
            self.ctx, PROJECT, inventory, [h.placement.node for h in holdings]
        )
        run = store.get_run(run.id)
        request = request_for(configuration_from_stored(run.configuration))
        narrowed = cluster_fit.narrow_request(
            self.ctx, run, request, inventory, berth_nodes=berth_volume_nodes(active)
        )
        if isinstance(narrowed, cluster_fit.Blocked):
            raise AssertionError(f"blocked: {narrowed}")
        jobs = [
            j for j in store.jobs_of(run) if j.status in (RunStatus.SUBMITTED, RunStatus.PENDING)
        ]
        queued = QueuedRun(run.id, run.project, run.priority, run.submitted_at, narrowed, len(jobs))
        decided = plan(inventory, [queued], holdings)
        for admit in decided.admits:
            for job, placement in zip(jobs, admit.placements, strict=True):
                job.status = RunStatus.PROVISIONING
                job.placement = placement
                assert store.save_job(job)
            refresh_run(store, run.id)
            for job in jobs:
                provisioning.provision_job(self.ctx, job.id)
        return decided

    def sync(self, run: Run) -> Run:
        for job in self.jobs(run):
            provisioning.sync_job(self.ctx, job.id)
        return self.ctx.store.get_run(run.id)

    def jobs(self, run: Run) -> list[Job]:
        return self.ctx.store.jobs_of(self.ctx.store.get_run(run.id))

    def pods(self, run: Run) -> list[Any]:
        k = self.kube
        selector = f"{kube.LABEL_RUN}={run.name},{kube.LABEL_PROJECT}={PROJECT}"
        items = k.call(k.core.list_namespaced_pod, self.namespace, label_selector=selector).items
        return sorted(items, key=lambda p: p.metadata.name)


@contextmanager
def fit_world(
    local_cluster: ClusterState,
    kube_admin: kube.Kube,
    directory: Path,
    *,
    namespace: str,
    backend: dict[str, Any] | None = None,
) -> Iterator[FitWorld]:
    """A world whose project ``fit`` has one backend: the local cluster plus ``backend``."""
    config = directory / "server-config.yml"
    backend_conf = {
        "type": "kubernetes",
        "kubeconfig": {"filename": local_cluster.kubeconfig},
        "namespace": namespace,
        **(backend or {}),
    }
    config.write_text(yaml.safe_dump({"projects": [{"name": PROJECT, "backends": [backend_conf]}]}))
    settings = Settings(
        home=directory / "home",
        server_config=config,
        redis=RedisSettings(url=local_cluster.redis_url, key_prefix=f"fit{secrets.token_hex(3)}"),
    )
    ctx = build_context(settings)
    ctx.store.put_user(User(name="fitter", token_sha256=token_sha256(secrets.token_hex(8))))
    ctx.store.put_project(Project(name=PROJECT, members=["fitter"]))
    try:
        yield FitWorld(ctx=ctx, namespace=namespace, kube=kube_admin)
    finally:
        keys = list(ctx.store.r.scan_iter(f"{settings.redis.key_prefix}:*", count=1000))
        if keys:
            ctx.store.r.delete(*keys)
        ctx.close()
