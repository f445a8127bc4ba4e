"""What each project holds: dominant resource shares (DRF) and GPU quotas.

A project's *dominant share* is its largest fraction of any one resource of the
cluster: GPUs of each model count as a resource of their own (eight A100s of
sixteen is a half, whatever the H100s do), and so do CPU and memory. When
several projects wait, the next free capacity goes to the project with the
smallest dominant share (Ghodsi et al., "Dominant Resource Fairness", NSDI
2011), which is the project furthest below an equal share.

Quotas cap a project's GPUs per model (``projects[].quotas`` in the server
config, e.g. ``{A100: 8}``); a model the project does not list is not capped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.gpu.inventory import GpuInventory, NodeInventory
from shared.gpu.labels import GpuGroup
from shared.state.records import Placement

Quotas = Mapping[str, Mapping[str, int]]
"""Project -> GPU model (upper case, as in :func:`gpu_model`) -> most GPUs it may hold."""

CPU, MEMORY = "cpu", "memory"


def gpu_model(node: NodeInventory | None, resource: str | None) -> str | None:
    """The model name quotas and shares use for ``resource`` on ``node`` (``A100``).

    The catalogue's short name when it knows the GPU, else the product label,
    else the resource name itself; always upper case, as quota keys are read.
    """
    if resource is None:
        return None
    group = next((g for g in node.gpus if g.resource == resource), None) if node else None
    return group_model(group) if group is not None else resource.upper()


def group_model(group: GpuGroup) -> str:
    return (group.name or group.product or group.resource).upper()


def normalise_quotas(quotas: Mapping[str, Mapping[str, int] | None]) -> dict[str, dict[str, int]]:
    """Quota keys as users write them (``a100``, ``A100``) -> the upper-case model names."""
    return {
        project: {model.upper(): limit for model, limit in (limits or {}).items()}
        for project, limits in quotas.items()
    }


@dataclass
class Ledger:
    """Per project and per resource, what is held; and the cluster's total of each."""

    nodes: dict[str, NodeInventory]
    totals: dict[str, int] = field(default_factory=dict)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, inventory: GpuInventory, holdings: Iterable[tuple[str, Placement]]) -> Ledger:
        ledger = cls(nodes={n.name: n for n in inventory.nodes})
        for node in inventory.nodes:
            if not node.schedulable:
                continue
            ledger._add_total(CPU, node.allocatable.cpu_millicores)
            ledger._add_total(MEMORY, node.allocatable.memory_bytes)
            for group in node.gpus:
                ledger._add_total(f"gpu:{group_model(group)}", group.count)
        for project, placement in holdings:
            ledger.add(project, placement)
        return ledger

    def add(self, project: str, placement: Placement) -> None:
        held = self.usage.setdefault(project, {})
        held[CPU] = held.get(CPU, 0) + placement.cpu_milli
        held[MEMORY] = held.get(MEMORY, 0) + placement.memory_bytes
        model = self.model_of(placement)
        if model is not None:
            key = f"gpu:{model}"
            held[key] = held.get(key, 0) + placement.gpus

    def model_of(self, placement: Placement) -> str | None:
        if placement.gpu_model is not None:
            return placement.gpu_model
        return gpu_model(self.nodes.get(placement.node), placement.gpu_resource)

    def gpus(self, project: str, model: str) -> int:
        return self.usage.get(project, {}).get(f"gpu:{model}", 0)

    def dominant_share(self, project: str) -> float:
        held = self.usage.get(project, {})
        return max(
            (amount / self.totals[key] for key, amount in held.items() if self.totals.get(key)),
            default=0.0,
        )

    def headroom(self, quotas: Quotas, project: str, model: str | None) -> int | None:
        """GPUs of ``model`` the project may still take within quota; None: no cap."""
        if model is None:
            return None
        limit = quotas.get(project, {}).get(model)
        return None if limit is None else limit - self.gpus(project, model)

    def _add_total(self, key: str, amount: int) -> None:
        self.totals[key] = self.totals.get(key, 0) + amount
