"""The queue's plain inputs and outputs: what waits, what holds, what the pass decided."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.placement.offers import Request
from shared.state.records import Placement


@dataclass(frozen=True)
class QueuedRun:
    """A run waiting for placement, reduced to what ordering and matching need."""

    run_id: str
    project: str
    priority: int
    submitted_at: float
    request: Request
    """One job's needs; ``request.nodes > 1`` makes the run a gang on distinct nodes."""
    jobs: int = 1
    """Jobs still to place (all of them, except a service that lost a replica)."""
    held_nodes: frozenset[str] = frozenset()
    """Nodes the run's other jobs already hold; a gang must avoid them too."""
    memory_limit_bytes: int | None = None
    """The memory limit its pods get (a ``limits.memory`` quota counts it); None: none."""
    job_requests: tuple[Request, ...] = ()
    """One request per job still to place, when the run's groups ask for different
    resources (dstack's node and replica groups); empty: every job asks ``request``."""
    key: tuple[int, float, str] = field(init=False, repr=False, compare=False)
    """Queue order inside a project (see :mod:`shared.queueing.order`); computed once,
    since a pass sorts and heaps 10,000 of them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (-self.priority, self.submitted_at, self.run_id))

    @property
    def gang(self) -> bool:
        return self.request.nodes > 1

    def request_of(self, job: int) -> Request:
        """What the ``job``-th job still to place asks."""
        return self.job_requests[job] if self.job_requests else self.request


@dataclass(frozen=True)
class Holding:
    """One placed job of any project: capacity taken until the job finishes."""

    project: str
    placement: Placement
    run_id: str = ""


@dataclass(frozen=True)
class Admit:
    run_id: str
    project: str
    placements: tuple[Placement, ...]
    """One per job still to place, in job order."""
    borrowed: bool = False
    """True when the run goes past its project's quota on idle capacity."""


@dataclass(frozen=True)
class Wait:
    run_id: str
    project: str
    cause: str
    """What it waits for, without the position (that is ``position``/``queued``)."""
    position: int
    """1 is next in its project's queue; 0 means not in the queue at all."""
    queued: int
    """How many runs wait in the project's queue."""

    @property
    def reason(self) -> str:
        return queue_reason(self.cause, self.position, self.queued, self.project)


def queue_reason(cause: str, position: int, queued: int, project: str) -> str:
    """What a waiting run's reason says: the cause, then its place in the queue."""
    if position == 0:  # held outside the queue (its volumes are in use elsewhere)
        return cause
    return f"{cause}; position {position} of {queued} in {project}'s queue"


@dataclass(frozen=True)
class Fail:
    run_id: str
    project: str
    reason: str


@dataclass
class Plan:
    admits: list[Admit] = field(default_factory=list)
    """In the order the pass decided them: fairness order, then queue order."""
    waits: list[Wait] = field(default_factory=list)
    fails: list[Fail] = field(default_factory=list)
    reservations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Blocked run id -> the nodes held back for it in this pass (backfill)."""
