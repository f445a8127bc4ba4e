"""A namespace's LimitRanges: a run whose container would exceed one fails at submission.

A LimitRange of type ``Container`` caps what one container may ask
(``max``) and fills in what it leaves out (``default`` limits,
``defaultRequest``). The apiserver refuses a pod past ``max`` at creation,
which for Berth would be a failure long after ``berth apply`` said yes; so the
API reads the namespace's LimitRanges (one LIST with the client's timeout) and
refuses such a run at once, naming the LimitRange. Berth's main container
requests CPU, memory, ephemeral storage and its GPUs, and limits GPUs (equal
to the request) and memory when the configuration bounds it; a limit it leaves
out is the LimitRange's ``default`` (which a request may not exceed), and
``max`` bounds both request and limit, as the apiserver checks them.
:func:`check` is pure. Defaults are not added to quota demand: Berth's pods set
every request a quota counts, and a ``limits.cpu`` quota is not capacity
(:mod:`shared.queueing.namespace_quota`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.clusters import Cluster
from shared.quantity import QuantityError, quantity_int, quantity_millis

_MILLIS = frozenset({"cpu"})
_GIB = 2**30


@dataclass(frozen=True)
class ContainerLimits:
    name: str
    max: dict[str, int]
    """Resource -> the most one container may ask (CPU in millicores, else base units)."""
    default: dict[str, int]
    """Resource -> the limit a container that sets none gets."""


def read_limit_ranges(cluster: Cluster) -> tuple[ContainerLimits, ...]:
    """The namespace's Container limits; KubeForbidden if RBAC says no."""
    k = cluster.kube
    listed = k.call(k.core.list_namespaced_limit_range, cluster.namespace)
    found = []
    for item in listed.items or []:
        for limit in (item.spec.limits if item.spec else None) or []:
            if limit.type != "Container":
                continue
            found.append(
                ContainerLimits(
                    name=item.metadata.name,
                    max=_amounts(limit.max or {}),
                    default=_amounts(limit.default or {}),
                )
            )
    return tuple(found)


def check(
    limits: tuple[ContainerLimits, ...],
    *,
    requests: Mapping[str, int],
    limits_set: Mapping[str, int],
) -> str | None:
    """Why the main container would be refused, naming the LimitRange; None if it fits.

    ``requests`` and ``limits_set`` by resource name (``cpu`` in millicores).
    """
    for found in limits:
        for resource, most in sorted(found.max.items()):
            asked = max(requests.get(resource, 0), limits_set.get(resource, 0))
            if asked > most:
                return (
                    f"LimitRange {found.name} allows at most {_show(resource, most)} {resource}"
                    f" per container; the run asks for {_show(resource, asked)}"
                )
        for resource, default in sorted(found.default.items()):
            asked = requests.get(resource, 0)
            if resource not in limits_set and asked > default:
                return (
                    f"LimitRange {found.name} gives a container that sets no {resource} limit"
                    f" a limit of {_show(resource, default)}, below the run's request of"
                    f" {_show(resource, asked)}; give the run an upper bound"
                )
    return None


def _amounts(raw: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in raw.items():
        try:
            out[name] = quantity_millis(value) if name in _MILLIS else quantity_int(value)
        except QuantityError:
            continue  # the apiserver validates quantities; a stranger one is not a limit
    return out


def _show(resource: str, amount: int) -> str:
    if resource in _MILLIS:
        return f"{amount / 1000:g}"
    if resource in ("memory", "ephemeral-storage"):
        return f"{amount / _GIB:g}Gi"
    return str(amount)
