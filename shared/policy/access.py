"""What Berth may do on each backend: read the whole cluster, or only its namespace.

Most people who run GPU work on a shared Kubernetes get a namespace, not the
cluster: a Role on pods, services and secrets there, and a ResourceQuota. So
Berth asks the apiserver (SelfSubjectAccessReview, which every authenticated
user may create) what it may do, per backend (cluster key + namespace), and
works in one of three modes:

- ``cluster``: it may list and watch nodes and pods in every namespace. Berth
  places pods itself from the live GPU inventory (the design's default).
- ``namespace``: it may work with pods in its namespace but not read nodes or
  other namespaces' pods. The kube-scheduler places pods from their requests
  and GPU node affinity (:mod:`shared.gpu.affinity`), and the queue admits
  against the namespace's ResourceQuotas only.
- ``none``: it may not even create or watch pods in its namespace (a Role
  revoked). Nothing is placed; runs wait, saying why.

The answer is kept in Redis for every process (one small blob per backend)
and asked again every ``kube.access_recheck_s``, or sooner after a 403 on a
read the mode allowed (:func:`forget`), never more than once per
``_MIN_PROBE_GAP_S``. A review is at most eleven cheap POSTs that are never
forbidden, so re-asking can never become a loop of forbidden calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubernetes import client
from pydantic import BaseModel, ConfigDict

from shared.clusters import Cluster, ClusterRegistry
from shared.errors import KubeError, KubeForbidden, KubeTemporaryError
from shared.policy.resource_quotas import namespace_key
from shared.state.store import Store

__all__ = [
    "CLUSTER_READS",
    "Access",
    "Check",
    "Mode",
    "access_for",
    "decide",
    "forget",
    "namespace_needs",
    "probe",
]

log = logging.getLogger(__name__)

_MIN_PROBE_GAP_S = 10.0  # the least time between two reviews of one backend
_UNKNOWN_RETRY_S = 15.0  # an apiserver that did not answer the review is asked again this soon


class Mode(StrEnum):
    CLUSTER = "cluster"
    NAMESPACE = "namespace"
    NONE = "none"


@dataclass(frozen=True)
class Check:
    """One question for the apiserver: may Berth ``verb`` ``resource`` (in ``namespace``)?"""

    verb: str
    resource: str
    namespace: str | None = None
    """None asks at the cluster scope (every namespace, or a cluster-scoped kind)."""

    def __str__(self) -> str:
        where = f"in namespace {self.namespace}" if self.namespace else "at the cluster scope"
        return f"{self.verb} {self.resource} {where}"


CLUSTER_READS = (
    Check("list", "nodes"),
    Check("watch", "nodes"),
    Check("list", "pods"),
    Check("watch", "pods"),
)
"""What the live inventory needs (workers/inventory_watch.py)."""


def namespace_needs(namespace: str) -> tuple[Check, ...]:
    """What running any job needs in the runs namespace, in either mode."""
    return tuple(
        Check(verb, resource, namespace)
        for verb, resource in (
            ("create", "pods"),
            ("get", "pods"),
            ("list", "pods"),
            ("delete", "pods"),
            ("watch", "pods"),
            ("create", "services"),
            ("create", "secrets"),
        )
    )


class Access(BaseModel):
    """A backend's mode, why, and when it was asked (stored; unknown fields tolerated)."""

    model_config = ConfigDict(extra="ignore")

    mode: Mode
    reason: str
    checked_at: float
    """Wall-clock time of the review."""
    forgotten: bool = False
    """A read this mode allowed was refused since: ask again at the next look."""
    unanswered: str | None = None
    """Set (never stored) when this look's review got no answer (the apiserver is
    unreachable): why. A scheduling pass then asks that cluster nothing else."""


def decide(answers: Mapping[Check, bool], *, namespace: str) -> tuple[Mode, str]:
    """The mode that ``answers`` (every check of CLUSTER_READS and namespace_needs) allow. Pure."""
    missing_here = [c for c in namespace_needs(namespace) if not answers.get(c, False)]
    if missing_here:
        return Mode.NONE, f"may not {missing_here[0]}: nothing can run; grant Berth's Role"
    missing_reads = [c for c in CLUSTER_READS if not answers.get(c, False)]
    if missing_reads:
        return (
            Mode.NAMESPACE,
            f"may not {missing_reads[0]}: the kube-scheduler places pods and the"
            f" namespace's quota is the capacity",
        )
    return Mode.CLUSTER, "may list and watch nodes and pods in every namespace"


def probe(cluster: Cluster) -> tuple[Mode, str]:
    """Ask the apiserver (SelfSubjectAccessReviews, each with the client's timeout).

    KubeError other than 403 (unreachable, 5xx) propagates. A 403 on the review
    itself (a cluster without the default ``system:basic-user`` binding) cannot
    tell us anything, so Berth assumes the modest mode and says so.
    """
    k = cluster.kube
    authz = client.AuthorizationV1Api(k.api)
    answers: dict[Check, bool] = {}
    try:
        for check in (*namespace_needs(cluster.namespace), *CLUSTER_READS):
            attributes: dict[str, str] = {"verb": check.verb, "resource": check.resource}
            if check.namespace:
                attributes["namespace"] = check.namespace
            review = k.call(
                authz.create_self_subject_access_review,
                {"spec": {"resourceAttributes": attributes}},
            )
            answers[check] = bool(review.status and review.status.allowed)
            if not answers[check] and check.namespace:
                break  # already "none": the rest cannot change the answer
    except KubeForbidden as e:
        return (
            Mode.NAMESPACE,
            f"cannot ask the apiserver what Berth may do ({e.message}); assuming namespace-only",
        )
    return decide(answers, namespace=cluster.namespace)


def access_for(
    store: Store,
    clusters: ClusterRegistry,
    project: str,
    *,
    recheck_s: float | None,
    cluster: str | None = None,
) -> Access:
    """The mode of the project's cluster ``cluster`` (None: its first): the stored
    answer, or a fresh review when it is due.

    ``recheck_s`` None (the API): any stored answer will do, since the workers keep
    it fresh; a review only when none is stored. One Redis read when fresh. When the
    apiserver does not answer a due review, the last answer stands (or, never asked,
    ``cluster`` is assumed, since a published inventory or a node LIST will then
    tell), and it is asked again within ``_UNKNOWN_RETRY_S``.
    """
    key = backend_key(clusters, project, cluster)
    stored = _load(store, key)
    now = time.time()
    if stored is not None and recheck_s is None and not stored.forgotten:
        return stored
    recheck_s = recheck_s if recheck_s is not None else _UNKNOWN_RETRY_S
    if stored is not None:
        age = now - stored.checked_at
        if age < _MIN_PROBE_GAP_S or (age < recheck_s and not stored.forgotten):
            return stored  # a burst of 403s costs one review, not one each
    try:
        mode, reason = probe(clusters.for_project(project, cluster))
    except KubeError as e:
        log.warning("cannot ask %s what Berth may do: %s", key, e.message)
        # Only an apiserver that is away spares the pass its other reads; a refused
        # review (unusual: any user may ask) leaves them to find out for themselves.
        away = e.message if isinstance(e, KubeTemporaryError) else None
        if stored is not None:
            return stored.model_copy(update={"unanswered": away})
        retry_at = now - recheck_s + _UNKNOWN_RETRY_S
        return Access(
            mode=Mode.CLUSTER,
            reason=f"not yet known: {e.message}",
            checked_at=retry_at,
            unanswered=away,
        )
    found = Access(mode=mode, reason=reason, checked_at=now)
    if stored is None or stored.mode != found.mode:
        log.info("backend %s runs in %s mode: %s", key, mode, reason)
    store.put_blob(_blob(key), found.model_dump(mode="json"))
    return found


def forget(
    store: Store, clusters: ClusterRegistry, project: str, cluster: str | None = None
) -> None:
    """A read the mode allowed was refused (403): ask again at the next look."""
    key = backend_key(clusters, project, cluster)
    stored = _load(store, key)
    if stored is None or stored.forgotten:
        return
    forgotten = stored.model_copy(update={"forgotten": True})
    store.put_blob(_blob(key), forgotten.model_dump(mode="json"))


def backend_key(clusters: ClusterRegistry, project: str, cluster: str | None = None) -> str:
    backend = clusters.server.backend_for(project, cluster)
    return namespace_key(backend.cluster_key(), backend.namespace)


def _load(store: Store, key: str) -> Access | None:
    raw = store.get_blob(_blob(key))
    return Access.model_validate(raw) if raw else None


def _blob(key: str) -> str:
    return f"access:{key}"
