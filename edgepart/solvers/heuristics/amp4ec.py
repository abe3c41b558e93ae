"""AMP4EC-style weighted scoring: partition by a per-layer cost, place by a node score.

Source: Zhang et al., "AMP4EC: Adaptive Model Partitioning Framework for Efficient Deep Learning
Inference in Edge Computing Environments", arXiv 2504.00407 (2025). No code is public, and the
paper does not give its weights, so these are ours, stated here:

* partitioner (RALOS): layer cost = 0.6 x compute share + 0.2 x parameter share + 0.2 x output
  share (each the layer's fraction of the model total; compute = the layer's best time); the layer
  order is cut into k contiguous segments of about equal cost, k = number of devices (fewer when
  segments do not fit);
* scheduler: node score = 0.5 x CPU (speed relative to the fastest) + 0.3 x memory (relative to
  the largest) + 0.2 x (1 - load), load = ``device.meta["load"]`` in [0, 1] (0 when absent: our
  instances carry no background load); segments, costliest first, each take the highest-scoring
  free node that can hold them (memory, device classes); the pipeline keeps the layer order.

What it models: compute, memory and load of nodes, one segment per node. What it ignores: link
bandwidths and transfer sizes when placing (communication enters only the layer cost), the
source and sink, the order of devices along the pipeline.

References
----------
.. [1] Zhang et al., arXiv 2504.00407, Sections III-B (RALOS) and III-C (task scheduler).
"""

from __future__ import annotations

import time

import numpy as np

from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import (
    RangeModel,
    RangePlan,
    balanced_cuts,
    device_speed,
    finish_heuristic,
)
from edgepart.solvers.heuristics.even import layer_work

__all__ = ["LAYER_WEIGHTS", "NODE_WEIGHTS", "layer_cost", "node_score", "solve_amp4ec"]

LAYER_WEIGHTS = (0.6, 0.2, 0.2)
"""Weights of compute, parameters and output bytes in a layer's cost."""
NODE_WEIGHTS = (0.5, 0.3, 0.2)
"""Weights of CPU, memory and (1 - load) in a node's score."""


def _share(x: np.ndarray) -> np.ndarray:
    total = float(x.sum())
    return x / total if total > 0 else np.zeros_like(x)


def layer_cost(inst: Instance, rm: RangeModel) -> np.ndarray:
    """RALOS-style per-layer cost from compute, parameter and output shares."""
    parts = (layer_work(rm), np.array([x.param_bytes for x in inst.model.layers]),
             np.array(inst.model.tensor_bytes, dtype=float))
    return np.asarray(sum(w * _share(p) for w, p in zip(LAYER_WEIGHTS, parts, strict=True)))


def node_score(inst: Instance) -> np.ndarray:
    """Per-device score from speed, memory and load."""
    memory = np.array([d.memory_bytes for d in inst.devices])
    load = np.array([float(d.meta.get("load", 0.0)) for d in inst.devices])
    cpu_w, mem_w, load_w = NODE_WEIGHTS
    return np.asarray(cpu_w * device_speed(inst) + mem_w * memory / memory.max()
                      + load_w * (1.0 - load))


def _schedule(rm: RangeModel, cuts: tuple[int, ...], cost: np.ndarray, score: np.ndarray
              ) -> RangePlan | None:
    seg_cost = [cost[cuts[b]:cuts[b + 1]].sum() for b in range(len(cuts) - 1)]
    free = sorted(range(rm.nd), key=lambda d: -score[d])
    devices: dict[int, int] = {}
    for b in sorted(range(len(seg_cost)), key=lambda b: -seg_cost[b]):
        host = next((d for d in free if rm.fits(cuts[b], cuts[b + 1], d)), None)
        if host is None:
            return None
        devices[b] = host
        free.remove(host)
    return RangePlan(cuts, tuple(devices[b] for b in range(len(seg_cost))))


@register("amp4ec")
def solve_amp4ec(inst: Instance, options: SolveOptions) -> SolveResult:
    """Cost-balanced segments on the best-scoring nodes (largest k that fits)."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    cost, score = layer_cost(inst, rm), node_score(inst)
    for k in range(min(rm.nd, rm.n), 0, -1):
        cuts = balanced_cuts(cost, k, rm.cut_ok)
        rp = None if cuts is None else _schedule(rm, cuts, cost, score)
        if rp is not None:
            return finish_heuristic(inst, rp.to_plan(inst), method="amp4ec", options=options,
                                    start=start, extra={"k": k})
    return finish_heuristic(inst, None, method="amp4ec", options=options, start=start,
                            message="no cost-balanced split fits the best-scoring nodes")
