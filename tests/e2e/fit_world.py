"""An in-process Berth with a server config of the test's own, on the real local cluster.

The session stack has one server config; volumes on hostPath, pod settings and
autoscaling pools need others. A :class:`FitWorld` builds a
:class:`~workers.context.WorkerContext` with its own config file (pointing at
the local cluster's kubeconfig), its own namespace and its own Redis prefix, so
no worker of the stack ever sees its messages, and calls the plain functions
directly: ``submit_run`` as the API does, then :meth:`FitWorld.place`, which runs
the real scheduling pass (``workers.scheduling.run_pass``, with its cluster-fit
wiring), then ``provision_job`` and ``sync_job``.
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
from shared import kube
from shared.settings import RedisSettings, Settings
from shared.state.records import Job, Placement, Project, Run, RunStatus, User
from shared.state.store import token_sha256
from workers import provisioning, scheduling
from workers.context import WorkerContext, build_context

PROJECT = "fit"


@dataclass(frozen=True)
class Decision:
    """What one scheduling pass did with a run."""

    placements: list[Placement]
    """Where its jobs were placed by this pass (empty when it waits or failed)."""
    status: RunStatus
    reason: str


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

    def place(self, run: Run) -> Decision:
        """One real scheduling pass, then provision what it placed of ``run``.

        The pass is :func:`workers.scheduling.run_pass` itself (with its
        cluster-fit wiring); only the provision messages it sends are handled
        here instead of by a worker.
        """
        store = self.ctx.store
        scheduling.run_pass(self.ctx)
        placed = [
            j
            for j in store.jobs_of(store.get_run(run.id))
            if j.status == RunStatus.PROVISIONING and j.pod_name is None and j.placement
        ]
        for job in placed:
            provisioning.provision_job(self.ctx, job.id)
        after = store.get_run(run.id)
        return Decision(
            placements=[j.placement for j in placed if j.placement is not None],
            status=after.status,
            reason=after.reason,
        )

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
