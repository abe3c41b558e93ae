r"""PipeEdge's dynamic programme as published, scored in edgepart's full cost model.

Source: Y. Hu, C. Imes, X. Zhao, S. Kundu, P. A. Beerel, S. P. Crago, J. P. Walters, "PipeEdge:
Pipeline Parallelism for Large-Scale Model Inference on Heterogeneous Edge Devices", DSD 2022;
public code usc-isi/PipeEdge (``src-native/schedule.cpp``, ``schedule_device_types``).

PipeEdge's model: devices of one *type* (same profile) are interchangeable; a stage of layers
:math:`i+1..j` on type :math:`u` followed by type :math:`v` costs
:math:`\max(\text{compute}_u(i+1..j),\ \beta_j / \min(b_u, b_v))` where :math:`\beta_j` is layer
:math:`j`'s output and :math:`b_u` *one* bandwidth per device; the period is the max over stages
(compute and communication overlap); no input or output transfer, no latency term. The DP is

.. math:: h[j][S + u][v] = \min_{i < j} \max(h[i][S][u],\ \text{comp}_u(i+1..j),\
          \text{comm}(j, u, v))

over layers placed, the multiset :math:`S` of types used and the next type. We run exactly this
on :mod:`edgepart.solvers.dp`'s engine, with types = devices of equal class, memory and speed
(PipeEdge's device-type profiles; the source and sink devices are types of their own, which only
adds states) and one bandwidth per type, the mean over its devices of the mean bandwidth of their
outgoing links (what one iperf figure per device would report). Stated deviations: the memory
check uses edgepart's memory model (so that its plans are valid), and the type index is used
consistently (their ``schedule.cpp`` indexes the per-host list with the type index, a slip we do
not reproduce).

What it ignores (and what its gap to the optimum measures): per-link bandwidth and latency, skip
tensors crossing a cut (only the last layer's output is charged), the source and sink transfers,
and receive time.

References
----------
.. [1] Hu et al., DSD 2022, Section IV (Algorithm 1).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from edgepart.cuts import CutCosts, DeviceTypes, path_plan, prefix_family
from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import Objective, SolveOptions, register
from edgepart.solvers.dp import MAX_CELLS, optimise
from edgepart.solvers.heuristics.common import RangeModel, finish_heuristic

__all__ = ["device_bandwidth", "pipeedge_problem", "solve_pipeedge"]


def device_bandwidth(rm: RangeModel) -> np.ndarray:
    """PipeEdge's one bandwidth per device: the mean of its outgoing links."""
    if rm.nd == 1:
        return np.ones(1)
    off = ~np.eye(rm.nd, dtype=bool)
    return np.array([rm.bw[d][off[d]].mean() for d in range(rm.nd)])


def pipeedge_problem(inst: Instance, rm: RangeModel) -> CutCosts:
    """The DP problem in PipeEdge's model (relay memory, PipeEdge communication)."""
    bw = device_bandwidth(rm)
    types = DeviceTypes.of(inst, range(rm.nd), refine=False)
    family = prefix_family(inst)
    prob = CutCosts.of(inst, family, types)
    type_bw = np.array([bw[list(m)].mean() for m in types.members])
    sizes = family.sets.sum(axis=1)
    last_out = np.where(sizes > 0, np.array(inst.model.tensor_bytes)[np.maximum(sizes - 1, 0)], 0.0)
    return replace(prob, comm_bytes=last_out, lat=np.zeros_like(prob.lat),
                   inv_bw=1.0 / np.minimum.outer(type_bw, type_bw),
                   src=np.zeros_like(prob.src), snk=np.zeros_like(prob.snk))


@register("pipeedge")
def solve_pipeedge(inst: Instance, options: SolveOptions) -> SolveResult:
    """PipeEdge's DP (its own objective: the period with overlap), scored by the shared model."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    prob = pipeedge_problem(inst, rm)
    states = prob.types.n_states * prob.types.n_types * prob.family.size
    if states > MAX_CELLS:
        return finish_heuristic(inst, None, method="pipeedge", options=options, start=start,
                                message=f"pipeedge: {states:.3g} DP cells (limit {MAX_CELLS:.3g})")
    out = optimise(prob, Objective.BOTTLENECK, overlap=True)
    plan = None if out.path is None else path_plan(inst, prob, out.path)
    return finish_heuristic(inst, plan, method="pipeedge", options=options, start=start,
                            extra={"pipeedge_objective_s": out.value,
                                   "device_types": prob.types.n_types})
