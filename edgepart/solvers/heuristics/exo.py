"""exo: decoder layers in proportion to device memory, devices in exo's ring order.

Source: exo (exo-explore/exo), ``exo/topology/ring_memory_weighted_partitioning_strategy.py``
(``RingMemoryWeightedPartitioningStrategy``, the default) and ``map_partitions_to_shards`` in
``exo/topology/partitioning_strategy.py``, as read in the repository:

1. the nodes are sorted by ``(memory, node_id)`` in *descending* order: the ring starts at the
   device with the most memory;
2. each node gets the interval ``[start, end)`` of ``[0, 1)`` with
   ``end = round(start + memory / total_memory, 5)``;
3. with ``n`` decoder layers, a node's shard is layers ``int(start * n)`` to
   ``int(end * n) - 1``; the last node's shard ends at layer ``n - 1``; empty shards are skipped
   (that node gets no layers).

The first shard also runs the embedding and the last the final norm and output head (exo's
``is_first_layer`` / ``is_last_layer``); the sampled token goes back round the ring to the first
node, which the instance's ``sink`` / ``source`` model when they are set. What it ignores: device
speed (compute and memory bandwidth), links, the KV cache and whether the shard fits: a shard
that does not fit its device is reported as no plan, as exo would fail to load it.

Memory is the instance's ``memory_bytes`` of each device (exo reads the device's RAM).
"""

from __future__ import annotations

import time

from edgepart.instance import Instance
from edgepart.llm.splits import plan_from_layer_devices, repeating_range, spread_ends
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import finish_fixed_rule

__all__ = ["exo_shards", "solve_exo"]


def exo_shards(memory: list[tuple[float, str]], n: int) -> list[tuple[str, int, int]]:
    """``(node_id, first_layer, last_layer)`` per non-empty shard, in ring order, for nodes given
    as ``(memory, node_id)`` and ``n`` layers (exo's two steps above, verbatim in arithmetic)."""
    nodes = sorted(memory, reverse=True)
    total = sum(m for m, _ in nodes)
    shards: list[tuple[str, int, int]] = []
    start = 0.0
    for k, (mem, node) in enumerate(nodes):
        end = round(start + mem / total, 5)
        first, last = int(start * n), int(end * n) - 1
        if k == len(nodes) - 1:
            last = n - 1
        if first <= last:
            shards.append((node, first, last))
        start = end
    if shards and shards[-1][2] < n - 1:
        shards[-1] = (shards[-1][0], shards[-1][1], n - 1)
    return shards


@register("exo")
def solve_exo(inst: Instance, options: SolveOptions) -> SolveResult:
    """exo's memory-weighted ring split, scored by the shared evaluator."""
    start = time.perf_counter()
    first, end = repeating_range(inst)
    shards = exo_shards([(d.memory_bytes, d.id) for d in inst.devices], end - first)
    units = [inst.device_index[node] for node, a, b in shards for _ in range(a, b + 1)]
    plan = plan_from_layer_devices(inst, spread_ends(inst, units, first), "exo")
    return finish_fixed_rule(inst, plan, method="exo", options=options, start=start,
                        extra={"shards": [[node, a, b] for node, a, b in shards],
                               "repeating_layers": end - first})
