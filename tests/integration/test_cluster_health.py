"""The proxy worker's marks of clusters that do not answer, on a real Redis and a real
apiserver (the local cluster) beside an address where none listens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.local.cluster import ClusterState
from cli.local.processes import free_port
from shared import kube
from shared.state import cluster_health as marks
from shared.state.store import Store
from workers import cluster_health

pytestmark = pytest.mark.integration


def _nowhere(tmp_path: Path) -> kube.Kube:
    """A client of an apiserver address where nothing listens (refused at once)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return kube.connect(kubeconfig=path, timeout=2.0)


def test_a_cluster_that_does_not_answer_is_marked_until_it_answers_and_a_stale_mark_is_ignored(
    store: Store, local_cluster: ClusterState, kube_admin: kube.Kube, tmp_path: Path
) -> None:
    away = _nowhere(tmp_path)
    try:
        cluster_health.probe_once(store, {"up": kube_admin, "away": away}, now=1000.0)
        found = marks.unreachable(store, now=1001.0)
        assert set(found) == {"away"}, found
        assert found["away"], "the mark says why"
        # Still away later: the first time it was seen stays, the stamp moves.
        cluster_health.probe_once(store, {"away": away}, now=1030.0)
        raw = json.loads(store.r.hget(store.key(marks.HASH), "away") or b"{}")
        assert raw["since"] == 1000.0 and raw["checked_at"] == 1030.0
        # A prober that stopped stamping: its mark no longer shuns the cluster.
        assert marks.unreachable(store, now=1030.0 + marks.STALE_S + 1) == {}
        # Answering again clears it.
        cluster_health.probe_once(store, {"away": kube_admin}, now=1040.0)
        assert marks.unreachable(store, now=1041.0) == {}
    finally:
        away.close()
