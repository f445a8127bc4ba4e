"""Which of its project's clusters each run is planned in, within one scheduling pass.

A project's backend may name several clusters (its kubeconfig contexts, as dstack
maps each context to a region). A pass plans cluster by cluster, each with its own
inventory, holdings and access mode, in one order for every project (the order the
server config first names them), so each cluster is planned once per pass:

- a run holding a placement is *pinned*: it is planned only where its jobs are, so a
  multi-node task and a service's replicas stay inside one cluster (their peers and
  proxy reach each other by pod address), and a requeued run starts afresh anywhere;
- a run mounting volumes is pinned to the project's first cluster, where Berth makes
  and registers claims;
- any other run is planned in its project's first cluster first; if it waits there,
  or could never fit there, it is *carried* to the next, and only the last cluster's
  answer is written. So it fails only where no cluster could ever take it, and a
  cluster whose apiserver is away (:meth:`Routes.skip`) holds up none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from shared.errors import ConfigError
from shared.policy import access
from shared.queueing.view import View
from shared.state.records import Job, Run
from shared.volumes.volume_placement import mounted_volumes

GroupKey = tuple[str, access.Mode]
"""A cluster's key and Berth's access mode there: projects sharing both plan together."""


@dataclass
class Group:
    key: GroupKey
    rank: int
    names: dict[str, str] = field(default_factory=dict)
    """Project -> its name for this cluster."""
    members: list[Run] = field(default_factory=list)

    @property
    def cluster_key(self) -> str:
        return self.key[0]

    @property
    def mode(self) -> access.Mode:
        return self.key[1]


@dataclass
class Routes:
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    later: dict[str, list[GroupKey]] = field(default_factory=dict)
    """Run id -> the groups it may still be carried to, in order."""
    moved: set[str] = field(default_factory=set)
    """Runs carried at least once this pass (their first cluster could not take them)."""

    def in_order(self) -> Iterator[Group]:
        """Every group with members, by rank; carrying only ever adds to later groups."""
        for group in sorted(self.groups.values(), key=lambda g: g.rank):
            if group.members:
                yield group

    def carry(self, run: Run) -> bool:
        """Move ``run`` on to its next cluster; False when it has none left."""
        rest = self.later.get(run.id)
        if not rest:
            return False
        self.groups[rest.pop(0)].members.append(run)
        self.moved.add(run.id)
        return True

    def pinned(self, run_id: str) -> bool:
        return run_id not in self.later


def route(
    view: View,
    clusters_of: Callable[[str], list[tuple[str, GroupKey]]],
    ranks: Mapping[str, int],
) -> tuple[Routes, dict[str, ConfigError]]:
    """Put each run of ``view`` in the group it is planned in first.

    ``clusters_of(project)``: (cluster name, group key) of each of its clusters, in
    the project's order; ConfigError for a project without a backend, whose runs are
    returned apart with it. ``ranks``: cluster key -> its place in the server config.
    """
    routes = Routes()
    known: dict[str, list[tuple[str, GroupKey]] | ConfigError] = {}
    refused: dict[str, ConfigError] = {}
    for run in view.runs:
        found = known.get(run.project)
        if found is None:
            try:
                found = known[run.project] = clusters_of(run.project)
            except ConfigError as e:
                found = known[run.project] = e
            else:
                for name, key in found:
                    rank = ranks.get(key[0], len(ranks))
                    group = routes.groups.setdefault(key, Group(key=key, rank=rank))
                    group.names.setdefault(run.project, name)
        if isinstance(found, ConfigError):
            refused[run.id] = found
            continue
        if len(found) == 1:  # one cluster (the usual case): nothing to choose
            routes.groups[found[0][1]].members.append(run)
            continue
        candidates = _candidates(run, view.jobs[run.id], found)
        candidates.sort(key=lambda item: ranks.get(item[1][0], len(ranks)))
        routes.groups[candidates[0][1]].members.append(run)
        if len(candidates) > 1:
            routes.later[run.id] = [key for _, key in candidates[1:]]
    return routes, refused


def _candidates(
    run: Run, jobs: list[Job], clusters: list[tuple[str, GroupKey]]
) -> list[tuple[str, GroupKey]]:
    held = next((j.placement for j in jobs if j.placement is not None), None)
    if held is not None:
        name = held.cluster or clusters[0][0]
        return [c for c in clusters if c[0] == name] or clusters[:1]
    if mounted_volumes(run.configuration):
        return clusters[:1]
    return list(clusters)
