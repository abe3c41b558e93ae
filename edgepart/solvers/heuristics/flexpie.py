r"""FlexPie: every device computes every layer together, with a scheme per layer chosen by a DP.

Source: Zhang et al., "FlexPie: Accelerate Distributed Inference on Edge Devices with Flexible
Combinatorial Optimization", arXiv 2502.15312 (code: Happyrhzhang/FlexPie; see
/work/shared/ALGORITHMS.md). FlexPie partitions each layer over all the devices by one of the
schemes row, column, 2D grid or output channel, and chooses the scheme of every layer by a
dynamic program over the layers (its DPP, Alg. 1, ``update_dpnn``) that minimises the summed
per-layer latency of one inference, data redistribution between schemes included.

What it models here: one split stage over all devices (the lead is the source, which holds the
input, or else the fastest device), schemes outc, rows and grid (FlexPie's column scheme is our
``grid`` on 2 or 3 devices, and its row and 2D-grid schemes are ``rows`` and ``grid``), costed by
:class:`edgepart.cost.SplitGroup`; the DP is :func:`edgepart.solvers.groups.split_schemes`, the
same pass the exact groups DP uses for one group. Departures: FlexPie's no-transmit fusion
(redundant halo compute over up to 5 layers) and its XGBoost cost model are not reproduced;
shares follow device speed (FlexPie: equal); the objective is always latency, as published (the
plan is scored on the requested objective). Needs every layer's ``meta.shape`` and a chain.
"""

from __future__ import annotations

import time

from edgepart.cost import SplitGroup
from edgepart.instance import Instance
from edgepart.plan import Mode
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.groups import one_group_members, one_group_plan, split_schemes
from edgepart.solvers.heuristics.common import finish_heuristic
from edgepart.solvers.heuristics.onedim import cannot_split

__all__ = ["solve_flexpie"]


@register("flexpie")
def solve_flexpie(inst: Instance, options: SolveOptions) -> SolveResult:
    """All devices as one split group, per-layer schemes by FlexPie's DP (latency)."""
    start = time.perf_counter()
    reason = cannot_split(inst)
    if reason:
        return finish_heuristic(inst, None, method="flexpie", options=options, start=start,
                                message=reason)
    group = SplitGroup(inst, one_group_members(inst))
    layers = list(range(len(inst.model.layers)))
    ends = split_schemes(group, layers, inst.model.input_bytes)
    if len(ends) < len(layers):
        return finish_heuristic(inst, None, method="flexpie", options=options, start=start,
                                message="a layer cannot be split by any scheme")
    schemes = ends[-1][1]
    return finish_heuristic(inst, one_group_plan(inst, Mode.SPLIT, schemes, "flexpie"),
                            method="flexpie", options=options, start=start,
                            extra={"schemes": {inst.model.layers[v].id: s.value
                                               for v, s in schemes.items()}})
