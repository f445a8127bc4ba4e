"""The API's namespace reads at submission, against the real apiserver: a burst of
submissions reads the LimitRanges and ResourceQuotas once per ``namespace_read_ttl_s``,
not once per run, and a quota added since is seen once that read is no longer fresh."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from api.services.namespace_quotas import check_namespace_quota
from cli.local.cluster import ClusterState
from shared import kube
from shared.clusters import ClusterRegistry
from shared.configuration.parse import parse_run_configuration
from shared.configuration.server import server_config_from_text
from shared.errors import ConfigError
from shared.state.store import Store

pytestmark = pytest.mark.integration

READS = ("list_namespaced_limit_range", "list_namespaced_resource_quota")
CONF = parse_run_configuration("type: task\nname: wide\ncommands: [x]\nresources: {cpu: 2}\n")


def _registry(local_cluster: ClusterState, namespace: str, ttl_s: float) -> ClusterRegistry:
    backend = {
        "type": "kubernetes",
        "kubeconfig": {"filename": local_cluster.kubeconfig},
        "namespace": namespace,
    }
    server = server_config_from_text(
        yaml.safe_dump({"projects": [{"name": "main", "backends": [backend]}]})
    )
    return ClusterRegistry(server, request_timeout_s=10.0, namespace_read_ttl_s=ttl_s)


def _count_reads(registry: ClusterRegistry, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the real client's calls of the two LISTs (each still goes to the apiserver)."""
    calls: Counter[str] = Counter()
    core = registry.for_project("main").kube.core
    for name in READS:
        monkeypatch.setattr(core, name, _counted(calls, name, getattr(core, name)))
    return calls


def _counted(calls: Counter[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return fn(*args, **kwargs)

    return call


@pytest.mark.parametrize(("ttl_s", "reads"), [(60.0, 1), (0.0, 5)])
def test_five_checks_read_the_namespace_once_while_the_read_is_fresh(
    local_cluster: ClusterState,
    namespace: str,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    ttl_s: float,
    reads: int,
) -> None:
    registry = _registry(local_cluster, namespace, ttl_s)
    calls = _count_reads(registry, monkeypatch)
    for _ in range(5):
        check_namespace_quota(store, registry, "main", CONF)
    assert calls == {name: reads for name in READS}


def test_a_quota_added_since_refuses_once_the_kept_read_is_dropped(
    local_cluster: ClusterState, kube_admin: kube.Kube, namespace: str, store: Store
) -> None:
    registry = _registry(local_cluster, namespace, 60.0)
    check_namespace_quota(store, registry, "main", CONF)  # no quota: kept as such
    body = {"metadata": {"name": "tight"}, "spec": {"hard": {"requests.cpu": "1"}}}
    kube_admin.call(kube_admin.core.create_namespaced_resource_quota, namespace, body)

    check_namespace_quota(store, registry, "main", CONF)  # still the fresh read: accepted
    for name in registry.names_of("main"):
        registry.for_project("main", name).recent.forget()  # as when ttl_s has passed
    with pytest.raises(ConfigError, match="namespace quota tight allows at most 1 cpu"):
        check_namespace_quota(store, registry, "main", CONF)
