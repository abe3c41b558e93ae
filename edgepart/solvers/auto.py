"""``auto``, the default exact method: the exact method and formulation that the instance suits.

In order, each only where it applies and every one a proof of its own:

1. ``dp_ideals``, the DP over ideals (:mod:`edgepart.solvers.dp`): exact on relay DAGs and on
   chains, and the fastest where its states stay few (every shipped instance it accepts is proven
   in under 0.1 s, where CP-SAT and HiGHS take 0.2-60 s). It refuses at once beyond
   :data:`~edgepart.cuts.MAX_IDEALS` ideals, too many device types, direct transfers on a DAG
   (where it proves nothing) and bicriteria requests without overlap (with overlap it answers them
   too: a period cap on latency directly, a latency cap on the period by bisection); a run stopped
   by its share of the time limit (:data:`DP_SHARE`) warm-starts the next step.
2. The lattice threshold search (:func:`edgepart.cuts.period_search`) for a period without
   limits on relay transfers: one sweep over the ideals per question, no pairs of ideals, so it
   reaches what ``dp_ideals`` refuses (a 1,000-layer chain on 32 devices proven in 16 s, 500- and
   2,000-layer BERTs on 16 and 8 devices in 1-6 s, Inception-v3's 35,683 ideals, where HiGHS on
   paths and CP-SAT stopped at 10-34% gaps in 60 s); it refuses at once when the device types
   give too many states per ideal or the DAG too many ideals, and may use
   :data:`~edgepart.solvers.exact.LATTICE_SHARE` of the time left. Where it refuses, the rest
   of that share goes to a range search for a plan and to the same sweep with the device counts
   relaxed (:func:`edgepart.cuts.relaxed_search`) for a bound (a 196-layer NASNet-A on 64
   devices: proven in 8 s, where CP-SAT stopped at a 91% gap). Its plan warm-starts, and its
   bound is kept by, step 3.
3. HiGHS on the path formulation, where paths apply (relay transfers or a chain, at most
   ``MAX_IDEALS`` ideals, few enough stage arcs): its threshold questions are answered in presolve
   or a few nodes (346- and 428-layer CNNs on 32 devices proven in 1.3-4.0 s where CP-SAT on stage
   slots took 37-44 s or stopped at a 91% gap; docs/results.md).
4. CP-SAT on stage slots elsewhere (direct transfers on a DAG, graphs with too many ideals), whose
   propagation does not depend on the weak LP bound of that model, and for bicriteria requests
   (``max_latency`` or ``max_period``) that step 1 refuses: a latency row on the path model makes
   each of HiGHS's threshold questions hard (ResNet-50 on 8 devices under a latency cap: HiGHS on
   paths 26.8 s, on stage slots 13.5 s, CP-SAT 2.4 s), and the Pareto front asks exactly these.

The result's ``backend`` and ``formulation`` (in ``extra``, and in ``solve --json``) say which
one answered (``lattice``/``ideals`` for step 2). ``--formulation stages|paths`` skips steps 1
and 2 and forces that model (CP-SAT on stage
slots, HiGHS on paths).
"""

from __future__ import annotations

import time
from dataclasses import replace

from edgepart.cost import infeasibility_reasons
from edgepart.formulations.model import Deadline
from edgepart.instance import Instance
from edgepart.results import SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import SolveOptions, best_plan, finish, register
from edgepart.solvers.cpsat import run_cpsat
from edgepart.solvers.dp import solve_dp_ideals
from edgepart.solvers.exact import solve_exact
from edgepart.solvers.highs import run_highs

__all__ = ["DP_SHARE", "solve_auto"]

DP_SHARE = 0.3
"""Share of the caller's time limit that step 1 may use."""


@register("auto")
def solve_auto(inst: Instance, options: SolveOptions) -> SolveResult:
    start = time.perf_counter()
    deadline = Deadline.after(options.time_limit)
    reasons = infeasibility_reasons(inst)
    if reasons:  # a plain reason beats any solver's "infeasible"
        return finish(inst, None, method="auto", options=options,
                      termination=Termination.INFEASIBLE, message="; ".join(reasons))
    if options.formulation == "auto":
        dp = solve_dp_ideals(inst, replace(options, time_limit=None if options.time_limit is None
                                           else options.time_limit * DP_SHARE))
        if dp.status in (SolutionStatus.OPTIMAL, SolutionStatus.INFEASIBLE):
            return replace(dp, method="auto", wall_time_s=time.perf_counter() - start,
                           extra={**dp.extra, "backend": "dp_ideals", "formulation": "ideals"})
        if dp.termination is Termination.TIME_LIMIT and dp.plan is not None:
            options = replace(options, warm_start=best_plan(
                inst, [options.warm_start, dp.plan], options))
    options = options.with_time_left(deadline)
    bicriteria = options.max_latency is not None or options.max_period is not None
    result = solve_exact(inst, options, "auto", {"paths": run_highs, "stages": run_cpsat},
                         prefer="stages" if bicriteria else "paths", lattice=True)
    return replace(result, wall_time_s=time.perf_counter() - start)
