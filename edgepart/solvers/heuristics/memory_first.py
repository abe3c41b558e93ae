"""Memory first: fill the device with the most memory, then the next, in layer order.

The rule people apply by hand (and tools' "offload as many layers as fit" options, e.g.
llama.cpp's ``--n-gpu-layers`` chosen as the most that fit): devices sorted by ``memory_bytes``,
largest first (ties in the instance's order); each takes the longest run of the next layers that
fits its memory under the shared cost model's stage memory (parameters, KV cache, working set and
transfer buffers, :meth:`~edgepart.solvers.heuristics.common.RangeModel.memory`); devices left
over get nothing. It uses as few devices as memory allows and ignores speed and links. No plan
when the layers do not fit on all the devices this way (a layer that may not run on the device
at hand also ends that device's run).
"""

from __future__ import annotations

import time

from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import RangeModel, RangePlan, finish_heuristic

__all__ = ["memory_first_plan", "solve_memory_first"]


def memory_first_plan(inst: Instance) -> RangePlan | None:
    """The fill-largest-first range plan, or ``None`` when the layers do not all fit."""
    rm = RangeModel(inst)
    order = sorted(range(rm.nd), key=lambda d: -inst.devices[d].memory_bytes)
    cuts, devices = [0], []
    for d in order:
        i = cuts[-1]
        # the longest run that fits (not the first failure: a later cut may need a smaller
        # send buffer) and does not cut a colocate group
        j = max((j for j in range(i + 1, rm.n + 1) if rm.cut_ok[j] and rm.fits(i, j, d)),
                default=i)
        if j > i:
            cuts.append(j)
            devices.append(d)
        if j == rm.n:
            return RangePlan(tuple(cuts), tuple(devices))
    return None


@register("memory_first")
def solve_memory_first(inst: Instance, options: SolveOptions) -> SolveResult:
    """Fill the largest device first, scored by the shared evaluator."""
    start = time.perf_counter()
    rp = memory_first_plan(inst)
    plan = None if rp is None else rp.to_plan(inst, "memory_first")
    return finish_heuristic(inst, plan, method="memory_first", options=options, start=start,
                            message="" if plan else "memory_first: the layers do not fit when "
                            "each device takes as many as fit, largest device first")
