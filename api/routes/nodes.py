"""Nodes: the inventory the scheduler places against, with each GPU's source."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ClustersDep, CurrentProject, StoreDep
from api.services import nodes as node_service

router = APIRouter(prefix="/api/projects/{project}/nodes", tags=["nodes"])


@router.get("")
def list_nodes(
    project: CurrentProject, store: StoreDep, clusters: ClustersDep
) -> node_service.NodesPublic:
    return node_service.list_nodes(store, clusters, project.name)
