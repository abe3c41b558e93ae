"""Helpers the importers share: reading JSON with one-line errors, a stable topological order,
and turning an instance dict into a validated :class:`~edgepart.instance.Instance`."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from edgepart.errors import InputError
from edgepart.instance import Instance, load_instance

__all__ = ["stable_topological_order", "validated_instance"]

K = TypeVar("K", bound=Hashable)


def stable_topological_order(nodes: Sequence[K], edges: Iterable[tuple[K, K]]) -> list[K]:
    """Kahn's algorithm that always takes the earliest ready node of ``nodes``.

    Raises :class:`InputError` naming some nodes of a cycle when there is one.
    """
    rank = {v: i for i, v in enumerate(nodes)}
    succ: dict[K, list[K]] = {v: [] for v in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for u, v in set(edges):
        succ[u].append(v)
        indegree[v] += 1
    ready = [rank[v] for v in nodes if indegree[v] == 0]
    heapq.heapify(ready)
    order: list[K] = []
    while ready:
        u = nodes[heapq.heappop(ready)]
        order.append(u)
        for v in succ[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(ready, rank[v])
    if len(order) < len(nodes):
        stuck = [str(v) for v in nodes if indegree[v] > 0][:5]
        raise InputError(f"edges: the graph has a cycle through {', '.join(stuck)}")
    return order


def validated_instance(data: Mapping[str, Any], what: str) -> Instance:
    """Validate an instance dict built by an importer; problems are prefixed with ``what``."""
    try:
        return load_instance(data)
    except InputError as err:
        raise InputError([f"{what}: imported instance is invalid: {p}" for p in err.problems]
                         ) from None
