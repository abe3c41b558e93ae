"""Granularity: which cut points between units a plan may use.

``module``: every unit of :func:`edgepart.profiling.trace.trace_model` (one per conv, norm,
activation, add, ...).

``block``: only the cut points that exactly **one tensor** crosses are kept. Walk the units in
their topological order; the cut after unit ``i`` is crossed by every tensor produced at or before
``i`` and read after ``i`` (the request input counts as produced before the first unit). The units
between two consecutive kept cuts merge into one block unit, named after the deepest module that
contains all of them (``layer1_0`` for a resnet bottleneck) when there is one.

Why these cuts. A cut crossed by two or more tensors ships all of them: cutting inside a residual
block ships the block input a second time on top of the inner activation, and cutting between the
branches of an inception module ships the module input and every finished branch. Under the relay
cost model both neighbouring stages pay that transfer, and the block's own boundary is crossed by
a single tensor that is usually no larger than that sum. Chains (``vgg16``) only have single-tensor
cuts, so for them ``block`` is ``module``.

What it is not: a dominance proof. Moving a cut to the block boundary also moves the compute of
part of the block to the neighbouring stage, so when one block's compute alone exceeds the period
the rest of the plan could reach (one huge block, fast links, many devices), a cut inside it can be
optimal and ``block`` loses it. ``tests/test_profiling_granularity.py`` checks both sides on tiny
examples by enumerating every plan: a residual model whose module-granularity optimum ``block``
keeps, and a case of the kind above where it cannot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import pairwise

from torch import fx

from edgepart.errors import InputError
from edgepart.profiling.trace import Group, TracedModel, Unit, assemble_units

__all__ = ["GRANULARITIES", "coarsen", "single_tensor_cuts"]

GRANULARITIES = ("module", "block")


def single_tensor_cuts(unit_ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[int]:
    """Positions ``i`` (a cut after ``unit_ids[i]``) that exactly one tensor crosses."""
    pos = {u: i for i, u in enumerate(unit_ids)}
    n = len(unit_ids)
    last_read: dict[str, int] = {}
    readers_of_input = set(unit_ids) - {dst for _, dst in edges}
    for src, dst in edges:
        last_read[src] = max(last_read.get(src, -1), pos[dst])
    crossing = [0] * (n + 1)  # difference array over cut positions
    spans = [(pos[u], last) for u, last in last_read.items()]
    spans.append((0, max((pos[u] for u in readers_of_input), default=0)))
    for first, last in spans:
        crossing[first] += 1
        crossing[last] -= 1
    cuts, alive = [], 0
    for i in range(n - 1):
        alive += crossing[i]
        if alive == 1:
            cuts.append(i)
    return cuts


def coarsen(traced: TracedModel, granularity: str) -> TracedModel:
    """The traced model at ``granularity`` (``module`` returns it unchanged)."""
    if granularity not in GRANULARITIES:
        raise InputError(f"--granularity: expected one of {', '.join(GRANULARITIES)}, "
                         f"got {granularity!r}")
    if granularity == "module":
        return traced
    ids = [u.id for u in traced.units]
    bounds = [-1, *single_tensor_cuts(ids, traced.edges), len(ids) - 1]
    runs = [traced.units[a + 1 : b + 1] for a, b in pairwise(bounds)]
    taken = {u.id for u in traced.units}
    groups = [_block_group(traced.graph_module, run, taken) for run in runs]
    units, edges = assemble_units(traced.graph_module, groups)
    return dataclasses.replace(traced, units=units, edges=edges, granularity=granularity)


def _block_group(gm: fx.GraphModule, run: Sequence[Unit], taken: set[str]) -> Group:
    if len(run) == 1:
        return Group(run[0].id, run[0].op, run[0].nodes)
    nodes = tuple(name for unit in run for name in unit.nodes)
    path, cls = _common_module(gm, nodes)
    block_id = path.replace(".", "_") if path else f"{run[0].id}-{run[-1].id}"
    suffix = 1
    candidate = block_id
    while candidate in taken:
        suffix += 1
        candidate = f"{block_id}_{suffix}"
    taken.add(candidate)
    return Group(candidate, cls or "block", nodes, tuple(u.id for u in run))


def _common_module(gm: fx.GraphModule, names: Sequence[str]) -> tuple[str, str]:
    """Path and lower-case class name of the deepest module holding every node, or ``("", "")``."""
    meta = {n.name: n.meta.get("nn_module_stack") for n in gm.graph.nodes}
    stacks = [list(meta[name].values()) for name in names if meta.get(name)]
    if not stacks:
        return "", ""
    common = stacks[0]
    for stack in stacks[1:]:
        k = 0
        while k < min(len(common), len(stack)) and common[k][0] == stack[k][0]:
            k += 1
        common = common[:k]
    if not common:
        return "", ""
    path, cls = common[-1][0], common[-1][1]
    return str(path), str(getattr(cls, "__name__", cls)).lower()
