"""Brute force: every plan of a tiny instance, each scored by the shared evaluator.

The reference that every exact method is checked against. A plan is a monotone stage index per
layer (``stage(u) <= stage(v)`` on every edge, stages 0..k-1 all non-empty) and an ordered choice
of k distinct devices; there are at most ``k^n * D!/(D-k)!`` of them, so it refuses instances with
more than :data:`MAX_PLANS` candidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from itertools import permutations

from edgepart.cost import evaluate, validate_plan
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, finish, register, respects_limits

__all__ = ["MAX_PLANS", "solve_brute"]

MAX_PLANS = 2_000_000


def _stage_maps(inst: Instance, k: int) -> Iterator[list[int]]:
    """Every monotone layer -> stage map onto exactly the stages 0..k-1."""
    n = len(inst.model.layers)
    pred = inst.model.pred
    sigma = [0] * n

    def rec(v: int) -> Iterator[list[int]]:
        if v == n:
            if len(set(sigma)) == k:
                yield list(sigma)
            return
        for b in range(max((sigma[u] for u in pred[v]), default=0), k):
            sigma[v] = b
            yield from rec(v + 1)

    yield from rec(0)


@register("brute")
def solve_brute(inst: Instance, options: SolveOptions) -> SolveResult:
    n, nd = len(inst.model.layers), len(inst.devices)
    kmax = min(n, nd)
    count = sum(k**n * math.perm(nd, k) for k in range(1, kmax + 1))
    if count > MAX_PLANS:
        return finish(inst, None, method="brute", options=options,
                      termination=Termination.UNSUPPORTED,
                      message=f"brute force would try ~{count:.2g} plans (limit {MAX_PLANS})")
    start = time.perf_counter()
    best: tuple[float, Plan] | None = None
    for k in range(1, kmax + 1):
        for sigma in _stage_maps(inst, k):
            for devs in permutations(range(nd), k):
                plan = Plan.from_assignment(inst, sigma, devs)
                if validate_plan(inst, plan):
                    continue
                m = evaluate(inst, plan)
                if not respects_limits(m.latency_s, m.bottleneck_s, options):
                    continue
                value = m.objective(options.objective.value)
                if best is None or value < best[0]:
                    best = (value, plan)
    wall = time.perf_counter() - start
    if best is None:
        return finish(inst, None, method="brute", options=options,
                      termination=Termination.INFEASIBLE, wall_time_s=wall,
                      message="no plan satisfies memory, classes, colocation and limits")
    return finish(inst, best[1], method="brute", options=options, termination=Termination.OPTIMAL,
                  bound=best[0], wall_time_s=wall, exact=True)
