"""A worker connects its clusters when it starts, not in the first scheduling pass."""

from __future__ import annotations

import threading

import pytest
from celery.signals import worker_ready

import workers.celery_app  # noqa: F401  # connects the worker_ready receiver
from workers import context as context_module
from workers.context import WorkerContext

pytestmark = pytest.mark.integration


def test_a_ready_worker_connects_every_cluster_in_a_thread_of_its_own(
    ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    connected = threading.Event()
    real = ctx.clusters.connect_all

    def connect_all() -> None:
        real()
        connected.set()

    monkeypatch.setattr(ctx.clusters, "connect_all", connect_all)
    monkeypatch.setattr(context_module, "context", lambda: ctx)
    worker_ready.send(sender=None)  # what Celery sends once the worker consumes
    assert connected.wait(30)
    # The client it built answers; the pass that follows uses it.
    cluster = ctx.clusters.for_project("main")
    k = cluster.kube
    assert k.call_json(k.core.list_namespaced_pod, cluster.namespace)["kind"] == "PodList"
