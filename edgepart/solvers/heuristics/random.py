"""Random partition and placement: the seed papers' random baseline, seeded, over N draws.

Source: the random baseline of A. Parthasarathy and B. Krishnamachari (arXiv 2210.12219; public
code ANRGUSC/SEIFER, "Random Algorithm" results), which SEIFER beats by about 10x on average.

Each draw picks a number of stages k uniformly in 1..min(D, cut positions + 1), k - 1 distinct
cut positions of the layer order uniformly among those that split no colocate group, and k
distinct devices uniformly in random order; draws that break memory or device classes are
rejected (so statistics are over *valid* random plans). ``options.extra["draws"]`` sets N
(default :data:`DRAWS`), ``options.seed`` the generator. It returns the **median draw** (the
valid draw whose objective is the lower median: a representative random plan, not the best), and
reports the mean, standard deviation, minimum, median and maximum objective over the valid draws
in ``extra`` (SEIFER compares against the mean).

What it models: nothing (uniform choices). What it ignores: everything but validity.

References
----------
.. [1] Parthasarathy & Krishnamachari, arXiv 2210.12219, Section VI.
"""

from __future__ import annotations

import time

import numpy as np

from edgepart.cost import evaluate
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import SolveResult
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.heuristics.common import RangeModel, RangePlan, finish_heuristic

__all__ = ["DRAWS", "random_range_plan", "solve_random"]

DRAWS = 100


def random_range_plan(rm: RangeModel, rng: np.random.Generator) -> RangePlan:
    """One uniform draw (not necessarily valid)."""
    allowed = [j for j in range(1, rm.n) if rm.cut_ok[j]]
    k = int(rng.integers(1, min(rm.nd, len(allowed) + 1) + 1))
    cuts = sorted(int(j) for j in rng.choice(allowed, k - 1, replace=False)) if k > 1 else []
    devices = tuple(int(d) for d in rng.choice(rm.nd, k, replace=False))
    return RangePlan((0, *cuts, rm.n), devices)


@register("random")
def solve_random(inst: Instance, options: SolveOptions) -> SolveResult:
    """N seeded draws; the median valid draw is returned, the spread reported in ``extra``."""
    start = time.perf_counter()
    rm = RangeModel(inst)
    rng = np.random.default_rng(options.seed)
    draws = int(options.extra.get("draws", DRAWS))
    scored: list[tuple[float, int, Plan]] = []
    for n in range(draws):
        rp = random_range_plan(rm, rng)
        if rm.valid(rp):
            plan = rp.to_plan(inst)
            scored.append((evaluate(inst, plan).objective(options.objective.value), n, plan))
    extra: dict[str, object] = {"draws": draws, "valid_draws": len(scored),
                                "returned": "median draw"}
    if not scored:
        return finish_heuristic(inst, None, method="random", options=options, start=start,
                                message=f"none of {draws} random draws was valid", extra=extra)
    values = np.array([v for v, _, _ in scored])
    extra.update(mean_s=float(values.mean()), std_s=float(values.std()),
                 min_s=float(values.min()), median_s=float(np.median(values)),
                 max_s=float(values.max()))
    median = sorted(scored, key=lambda x: (x[0], x[1]))[(len(scored) - 1) // 2]
    return finish_heuristic(inst, median[2], method="random", options=options, start=start,
                            extra=extra)
