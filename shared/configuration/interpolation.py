"""dstack's per-node expressions: the node rank, and the IP address of a group's node.

That is ``${{ dstack.node_rank }}`` and ``${{ groups[i].nodes[j].IP_ADDRESS }}``.

Both are dstack's (``VariablesInterpolator`` and ``nodes_interpolator``); Berth fills
them at different times, each where the value is first known:

- a volume name's ``${{ dstack.node_rank }}`` (or its alias ``dstack.job_num``) when
  the job's pod is made: each node of a multi-node task mounts its own volume;
- a node group's ``${{ groups[i].nodes[j].IP_ADDRESS }}`` inside the pod, from the
  peer's stable DNS name: Berth replaces it with a shell variable that the pod's
  script sets before the commands run (:func:`node_ip_variable`), because a peer's
  IP exists only once its pod does, and some peers start after this one.

``$${{ ... }}`` is dstack's escape for a literal ``${{ ... }}`` and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NODE_RANK_RE = re.compile(r"(?<!\$)\$\{\{\s*dstack\.(?:node_rank|job_num)\s*\}\}")
_ANY_RE = re.compile(r"(?<!\$)\$\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_NODE_IP_INNER = r"groups\[(\d+)\]\.nodes\[(\d+)\]\.IP_ADDRESS"
_NODE_IP_RE = re.compile(rf"(?<!\$)\$\{{\{{\s*{_NODE_IP_INNER}\s*\}}\}}")
_NODE_IP_NAME_RE = re.compile(rf"{_NODE_IP_INNER}")


def has_node_rank(value: str) -> bool:
    """Whether ``value`` names ``${{ dstack.node_rank }}`` (or ``dstack.job_num``)."""
    return _NODE_RANK_RE.search(value) is not None


def with_node_rank(value: str, rank: int) -> str:
    """``value`` with every ``${{ dstack.node_rank }}`` replaced by ``rank``."""
    return _NODE_RANK_RE.sub(str(rank), value)


def without_node_rank(value: str) -> str:
    """``value`` with the node-rank expressions taken out (to look for any other)."""
    return _NODE_RANK_RE.sub("0", value)


def names_groups(value: str) -> bool:
    """Whether ``value`` holds any ``${{ groups... }}`` expression."""
    return any(m.group(1).startswith("groups") for m in _ANY_RE.finditer(value))


def node_ip_problem(command: str, group_sizes: Sequence[int]) -> str | None:
    """What is wrong with the ``groups[...]`` expressions of ``command``, or None.

    Only ``groups[i].nodes[j].IP_ADDRESS`` exists (dstack refuses any other name under
    ``groups``), and ``i`` and ``j`` must name a group and one of its nodes.
    """
    for match in _ANY_RE.finditer(command):
        name = match.group(1)
        if not name.startswith("groups"):
            continue
        found = _NODE_IP_NAME_RE.fullmatch(name)
        if found is None:
            return f"unknown expression ${{{{ {name} }}}}: expected groups[i].nodes[j].IP_ADDRESS"
        group, node = int(found.group(1)), int(found.group(2))
        if group >= len(group_sizes) or node >= group_sizes[group]:
            return (
                f"${{{{ {name} }}}} names no node: the task has {len(group_sizes)} groups"
                f" of {', '.join(str(n) for n in group_sizes)} nodes"
            )
    return None


def node_ip_ranks(command: str, group_sizes: Sequence[int]) -> list[int]:
    """The task-wide ranks whose IP ``command`` asks for, in order of first mention."""
    ranks: list[int] = []
    for match in _NODE_IP_RE.finditer(command):
        rank = _rank(group_sizes, int(match.group(1)), int(match.group(2)))
        if rank not in ranks:
            ranks.append(rank)
    return ranks


def with_node_ip_variables(command: str, group_sizes: Sequence[int]) -> str:
    """``command`` with each ``${{ groups[i].nodes[j].IP_ADDRESS }}`` as its shell variable."""
    return _NODE_IP_RE.sub(
        lambda m: "${" + node_ip_variable(_rank(group_sizes, int(m[1]), int(m[2]))) + "}", command
    )


def node_ip_variable(rank: int) -> str:
    """The shell variable the pod's script sets to the IP of the node of ``rank``."""
    return f"BERTH_NODE_{rank}_IP"


def _rank(group_sizes: Sequence[int], group: int, node: int) -> int:
    # Ranks run through the groups in order: group 0's nodes first (rank 0 is the master).
    return sum(group_sizes[:group]) + node
