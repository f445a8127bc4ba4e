"""Offers: which nodes can take a request now, in the shape the CLI prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from shared import placements
from shared.clusters import ClusterRegistry
from shared.configuration.base import config_error_from_validation
from shared.configuration.resources import ResourcesSpec
from shared.configuration.server import KubernetesBackend
from shared.errors import ConfigError
from shared.inventory_store import load_inventory
from shared.offers import Offer, Request, describe, match, nominal_memory_mib
from shared.requests import request_from_resources
from shared.store import Store


class OfferPublic(BaseModel):
    backend: str
    node: str
    gpu: str | None
    gpu_memory: str | None
    count: int
    free: int
    total: int
    price: str | None


class OffersPublic(BaseModel):
    summary: str
    possible: bool
    reason: str
    nodes: int
    offers: list[OfferPublic]


def offers_for(
    store: Store,
    clusters: ClusterRegistry,
    project: str,
    request: Request,
) -> OffersPublic:
    inventory = load_inventory(store, clusters, project)
    held = placements.reserved(j for _, jobs in placements.active_runs(store) for j in jobs)
    verdict = match(inventory, request, reserved=held)
    backend = clusters.server.backend_for(project)
    return OffersPublic(
        summary=describe(request),
        possible=verdict.possible,
        reason=verdict.reason,
        nodes=request.nodes,
        offers=[_public(o, backend) for o in verdict.offers],
    )


def resources_from_query(**query: Any) -> ResourcesSpec:
    """``?gpu=A100:80GB:2&cpu=4..`` parsed with the configuration grammar."""
    raw = {k: v for k, v in query.items() if v is not None}
    try:
        return ResourcesSpec.model_validate(raw)
    except ValidationError as e:
        err = config_error_from_validation(e, data=raw)
        raise ConfigError(err.message, field=err.field) from e


def request_for_query(nodes: int = 1, **query: Any) -> Request:
    return request_from_resources(resources_from_query(**query), nodes=nodes)


def _public(offer: Offer, backend: KubernetesBackend) -> OfferPublic:
    group = offer.group
    mem = nominal_memory_mib(group) if group else None
    name = (group.name or group.product) if group else None
    prices = backend.gpu_prices or {}
    price = prices.get(name) if name else None
    return OfferPublic(
        backend=f"kubernetes/{backend.namespace}",
        node=offer.node,
        gpu=name,
        gpu_memory=f"{mem // 1024}GB" if mem else None,
        count=offer.gpus,
        free=offer.free_gpus,
        total=offer.total_gpus,
        price=f"${price * max(offer.gpus, 1):.2f}/h" if price is not None else None,
    )
