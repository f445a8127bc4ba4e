"""A namespace's ResourceQuotas as capacity: what Berth may still create there. Pure.

A ResourceQuota caps what the pods of a namespace request together
(``requests.nvidia.com/gpu: 2``); the apiserver's quota admission refuses a pod
that would go past it with ``403 exceeded quota``. Berth reads the quotas of the
runs namespace and admits a run only when its jobs fit in what is left, so the
run waits in Berth's queue (with the quota named in its reason) instead of
failing at pod creation.

**What is left, without counting anything twice.** Quota admission adds a pod to
``status.used`` in the same request that creates it; ``status.used`` therefore
already holds every live pod of the namespace, Berth's included, *as of the
moment the quota was read*. Berth's own jobs take capacity from placement, before
their pods exist (see :mod:`shared.placement.placements`). So::

    free = hard - status.used - (Berth's placed jobs whose pods status.used missed)

and the rule for "missed" is: a job is counted in ``status.used`` if and only if
its pod was already recorded on the job (``job.pod_name``) in the store view read
*before* the quota was read. Its pod existed then, so admission had counted it.
Every other placed job is added on top. Errors go one way only: a pod created
but not yet recorded when the view was read is counted twice (a run waits one
pass longer), never zero times (which would break the quota). A cached read
keeps the set of jobs it counted, so jobs placed after it are added on top too.
A pod that ended is dropped from ``status.used`` by the quota controller
shortly after, and its job stops holding when Berth syncs it; until both have
happened the freed room may show one pass late, never early.

Berth's pods request CPU, memory, ephemeral storage and their GPUs (extended
resources have requests equal to limits), and limit memory only when the
configuration gives a memory upper bound; those are the quantities counted
here, plus the ``pods`` and ``count/pods`` object counts. Other quota keys
(services, secrets, ``limits.cpu``) are not capacity: a pod refused for them is
still a wait (:func:`quota_refusal`). Quotas with scopes or a scope selector
are left out: Berth cannot tell cheaply which of its pods they select.

**Waiting in order.** A run the quota cannot take now blocks the quota keys it
is short of for the rest of the pass: a later run (in the queue's fairness and
priority order, :mod:`shared.queueing.planner`) that needs any of them waits
too, so a two-GPU gang is not starved by single-GPU runs behind it taking each
GPU as it frees. Runs that need none of them (CPU-only work under a GPU quota)
are not held up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.quantity import QuantityError, quantity_int, quantity_millis
from shared.state.records import Placement

# Plain names in a quota mean requests (Kubernetes' own aliases).
_ALIASES = {
    "cpu": "requests.cpu",
    "memory": "requests.memory",
    "ephemeral-storage": "requests.ephemeral-storage",
}
_MILLIS = frozenset({"requests.cpu", "limits.cpu"})  # counted in millicores, like Placement
_GIB = 2**30


@dataclass(frozen=True)
class NamespaceQuota:
    """One ResourceQuota, in base units (CPU in millicores, memory in bytes)."""

    name: str
    hard: Mapping[str, int]
    used: Mapping[str, int]
    counted: bool = True
    """False until the quota controller has filled ``status``: admission then refuses
    every pod the quota covers (``status unknown for quota``), so nothing fits yet."""


def quota_from_kube(obj: Any) -> NamespaceQuota | None:
    """A ``V1ResourceQuota`` as a :class:`NamespaceQuota`; None when it is not capacity.

    Until the quota controller has filled ``status``, admission refuses every pod the
    quota covers (``status unknown for quota``), so such a quota is read as not
    counted yet, and nothing it covers fits.
    """
    spec = obj.spec
    if spec is None or spec.scopes or spec.scope_selector is not None:
        return None
    status = obj.status
    counted = status is not None and bool(status.hard)
    hard = _amounts(status.hard if counted else (spec.hard or {}))
    used = _amounts((status.used if status is not None else None) or {})
    return NamespaceQuota(name=obj.metadata.name, hard=hard, used=used, counted=counted)


def memory_limit_of(conf: Any) -> int | None:
    """The pod's memory limit in bytes (as :mod:`workers.podspec` sets it), or None."""
    memory = getattr(getattr(conf, "resources", None), "memory", None)
    if memory is None or memory.max is None:
        return None
    return int(float(memory.max) * _GIB)


def demand(placement: Placement, *, memory_limit_bytes: int | None = None) -> dict[str, int]:
    """What one job's pod counts against a quota, by quota key."""
    need = {
        "pods": 1,
        "count/pods": 1,
        "requests.cpu": placement.cpu_milli,
        "requests.memory": placement.memory_bytes,
        "requests.ephemeral-storage": placement.disk_bytes,
    }
    if placement.gpu_resource and placement.gpus:
        need[f"requests.{placement.gpu_resource}"] = placement.gpus
        need[f"limits.{placement.gpu_resource}"] = placement.gpus
    if memory_limit_bytes:
        need["limits.memory"] = memory_limit_bytes
    return {key: amount for key, amount in need.items() if amount}


def total(demands: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for need in demands:
        for key, amount in need.items():
            out[key] = out.get(key, 0) + amount
    return out


def quota_refusal(message: str) -> str | None:
    """The quota part of an apiserver refusal that frees up as pods end, or None.

    ``exceeded quota``: the quota is full now (a race with another creator).
    ``status unknown for quota``: a new quota the controller has not counted yet.
    """
    for words in ("exceeded quota", "status unknown for quota"):
        start = message.find(words)
        if start >= 0:
            return message[start:]
    return None


@dataclass
class QuotaRoom:
    """What a namespace's quotas leave for Berth during one scheduling pass."""

    quotas: tuple[NamespaceQuota, ...]
    pending: dict[str, int] = field(default_factory=dict)
    """Berth's placed jobs that ``status.used`` did not count (see the module docstring)."""
    taken: dict[str, int] = field(default_factory=dict)
    """Admitted earlier in this pass."""
    blocked: dict[str, str] = field(default_factory=dict)
    """Quota key -> why an earlier run of this pass waits for it."""

    def beyond_hard(self, need: Mapping[str, int]) -> str | None:
        """Why a run needing ``need`` in all could never fit, even in an empty namespace."""
        for quota in self.quotas:
            for key, amount in sorted(need.items()):
                hard = quota.hard.get(key)
                if hard is not None and amount > hard:
                    return (
                        f"namespace quota {quota.name} allows at most {_show(key, hard)}"
                        f" {_label(key)}; the run asks for {_show(key, amount)}"
                    )
        return None

    def shortfall(self, need: Mapping[str, int]) -> str | None:
        """Why ``need`` does not fit now, naming the quota; None when it does."""
        for key in sorted(need):
            if need[key] > 0 and key in self.blocked:
                return f"{self.blocked[key]}; an earlier run waits for it"
        for quota in self.quotas:
            for key, amount in sorted(need.items()):
                hard = quota.hard.get(key)
                if hard is None:
                    continue
                if not quota.counted:
                    return f"namespace quota {quota.name}: not yet counted by Kubernetes"
                in_use = self.in_use(quota, key)
                if in_use + amount > hard:
                    return (
                        f"namespace quota {quota.name}: {_show(key, in_use)} of"
                        f" {_show(key, hard)} {_label(key)} in use"
                    )
        return None

    def in_use(self, quota: NamespaceQuota, key: str) -> int:
        return quota.used.get(key, 0) + self.pending.get(key, 0) + self.taken.get(key, 0)

    def take(self, need: Mapping[str, int]) -> None:
        for key, amount in need.items():
            self.taken[key] = self.taken.get(key, 0) + amount

    def block(self, need: Mapping[str, int], cause: str) -> None:
        """Hold the keys ``need`` is short of for the run that waits (see the docstring)."""
        short = {
            key
            for quota in self.quotas
            for key, amount in need.items()
            if key in quota.hard
            and (not quota.counted or self.in_use(quota, key) + amount > quota.hard[key])
        }
        for key in short:
            self.blocked.setdefault(key, cause)


def room_for(
    quotas: Iterable[NamespaceQuota], uncounted: Iterable[Mapping[str, int]] = ()
) -> QuotaRoom | None:
    """The room left by ``quotas`` with Berth's ``uncounted`` jobs on top; None: no quota."""
    found = tuple(quotas)
    if not found:
        return None
    return QuotaRoom(quotas=found, pending=total(uncounted))


def describe_quota(quota: NamespaceQuota) -> list[str]:
    """One line per limit, as ``berth offer`` shows what a quota allows."""
    return [
        f"{quota.name}: {_show(key, quota.used.get(key, 0))} of {_show(key, hard)}"
        f" {_label(key)} in use"
        for key, hard in sorted(quota.hard.items())
    ]


def _amounts(raw: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in raw.items():
        key = _ALIASES.get(name, name)
        try:
            out[key] = quantity_millis(value) if key in _MILLIS else quantity_int(value)
        except QuantityError:
            continue  # the apiserver validates quantities; a stranger one is not capacity
    return out


def _label(key: str) -> str:
    for prefix in ("requests.", "limits."):
        if key.startswith(prefix):
            name = key.removeprefix(prefix)
            return name if prefix == "requests." else f"{name} (limit)"
    return key


def _show(key: str, amount: int) -> str:
    if key in _MILLIS:
        return f"{amount / 1000:g}"
    if key.endswith((".memory", ".ephemeral-storage")):
        return f"{amount / _GIB:g}Gi"
    return str(amount)
