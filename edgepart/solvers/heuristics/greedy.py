"""SEIFER's greedy joint baseline: SEIFER's partition, then a nearest-highest-bandwidth path.

Source: the comparison baseline of A. Parthasarathy and B. Krishnamachari (arXiv 2210.12219,
"joint optimisation" greedy; public code ANRGUSC/SEIFER, ``joint_optimization.ipynb``,
``choose_node_path``): the same partition as SEIFER (steps 1-3 in
:mod:`edgepart.solvers.heuristics.seifer`); then, from every start device, a path built by
always moving to the unused device with the highest-bandwidth link from the current one; the
path with the best SEIFER objective (max transfer bytes / bandwidth) is kept.

What it models and ignores: as SEIFER (transfers and bandwidths only; no compute, latency,
source or sink; memory as the smallest device's). Stated extensions: devices that may not run a
segment are skipped; ties (e.g. a single segment) go to the faster start device.

References
----------
.. [1] Parthasarathy & Krishnamachari, arXiv 2210.12219, Section VI (baselines).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from edgepart.instance import Instance
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import RangeModel, RangePlan, finish_heuristic
from edgepart.solvers.heuristics.seifer import hosts, seifer_objective, seifer_partition

__all__ = ["greedy_path", "greedy_range_plan", "solve_greedy"]


def greedy_path(rm: RangeModel, allowed: list[list[int]], first: int) -> tuple[int, ...] | None:
    """From ``first``, always the unused allowed device with the highest-bandwidth link."""
    path = [first]
    for pool in allowed[1:]:
        free = [d for d in pool if d not in path]
        if not free:
            return None
        path.append(max(free, key=lambda d: rm.bw[path[-1], d]))
    return tuple(path)


def _best_start(rm: RangeModel, cuts: Sequence[int]) -> tuple[int, ...] | None:
    allowed = hosts(rm, cuts)  # fastest first, so ties go to the faster start
    paths = [p for p in (greedy_path(rm, allowed, s) for s in allowed[0]) if p is not None]
    return min(paths, key=lambda p: seifer_objective(rm, cuts, p), default=None)


def greedy_range_plan(inst: Instance, rm: RangeModel) -> RangePlan | None:
    """SEIFER's partition on the best greedy path, or ``None``."""
    part = seifer_partition(inst, rm)
    devices = None if part is None else _best_start(rm, part.cuts)
    return None if part is None or devices is None else RangePlan(part.cuts, devices)


@register("greedy")
def solve_greedy(inst: Instance, options: SolveOptions) -> SolveResult:
    """SEIFER's partition placed by the greedy highest-bandwidth path from the best start."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    rp = greedy_range_plan(inst, rm)
    if rp is None:
        return finish_heuristic(inst, None, method="greedy", options=options, start=start,
                                message="no SEIFER partition or no greedy path")
    return finish_heuristic(inst, rp.to_plan(inst), method="greedy", options=options,
                            start=start, extra={"segments": len(rp.devices),
                                                "seifer_objective_s": seifer_objective(
                                                    rm, rp.cuts, rp.devices)})
