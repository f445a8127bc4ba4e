"""Offers: what the cluster can give a request now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ClustersDep, CurrentProject, StoreDep
from api.services import offers as offer_service

router = APIRouter(prefix="/api/projects/{project}/offers", tags=["offers"])


@router.get("")
def list_offers(
    project: CurrentProject,
    store: StoreDep,
    clusters: ClustersDep,
    gpu: Annotated[str | None, Query(max_length=200, examples=["A100:80GB:2"])] = None,
    cpu: Annotated[str | None, Query(max_length=50, examples=["4.."])] = None,
    memory: Annotated[str | None, Query(max_length=50, examples=["32GB.."])] = None,
    disk: Annotated[str | None, Query(max_length=50, examples=["100GB.."])] = None,
    nodes: Annotated[int, Query(ge=1, le=1000)] = 1,
) -> offer_service.OffersPublic:
    request = offer_service.request_for_query(
        nodes=nodes, gpu=gpu, cpu=cpu, memory=memory, disk=disk
    )
    return offer_service.offers_for(store, clusters, project.name, request)
