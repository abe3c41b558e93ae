"""HiGHS backend: the neutral model through PuLP, solved by HiGHS via highspy.

The proven bound is HiGHS's own MIP dual bound (``mip_dual_bound``), read from the solver object,
never inferred from PuLP's status (which can say "Optimal" after a time limit). Gap tolerances are
set to ``1e-7`` relative and 0 absolute so that "optimal" means the same as everywhere else.
"""

from __future__ import annotations

import math
from typing import Any

import highspy
import pulp

from edgepart.formulations.model import NO_DEADLINE, Deadline, LinearModel
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.milp import solver_output, to_pulp

__all__ = ["INTEGRALITY_TOL", "run_highs", "solve_highs"]

INTEGRALITY_TOL = 1e-9
"""HiGHS's ``mip_feasibility_tolerance`` (default 1e-6). A Boolean at 1e-6 inside a big-M row
(M up to the horizon, 1000 time units) moves a time by about 1e-6 of the horizon: enough for a
"solution" that breaks ``--max-period`` at the Pareto front's 1e-6 steps (found by
tests/test_pareto.py). At 1e-9 the leak is far below the optimality tolerance."""


class _WarmHiGHS(pulp.HiGHS):
    """PuLP's HiGHS interface plus a MIP start from the variables' initial values, and a time
    limit that counts PuLP's model building (set just before HiGHS starts)."""

    deadline = NO_DEADLINE

    def callSolver(self, lp: Any) -> None:
        if math.isfinite(self.deadline.at):
            self.deadline.check()
            lp.solverModel.setOptionValue("time_limit", max(0.01, self.deadline.left()))
        start = [(v.index, v.varValue) for v in lp.variables()
                 if v.cat == pulp.LpInteger and v.varValue is not None]
        if start:
            index, value = zip(*start, strict=True)
            lp.solverModel.setSolution(len(index), list(index), list(value))
        super().callSolver(lp)


def run_highs(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model``; ``options.time_limit`` counts from this call (building included)."""
    deadline = Deadline.after(options.time_limit)
    pm = to_pulp(model, deadline=deadline)
    pm.set_hint(model.hint)
    solver = _WarmHiGHS(msg=options.verbose, timeLimit=options.time_limit,
                        threads=options.threads, gapRel=1e-7, gapAbs=0.0,
                        random_seed=options.seed,
                        mip_feasibility_tolerance=INTEGRALITY_TOL,
                        presolve="on" if model.presolve else "off")
    solver.deadline = deadline
    with solver_output(options.verbose):
        pm.problem.solve(solver)
    h = pm.problem.solverModel
    info = h.getInfo()
    status = h.getModelStatus()
    has = info.primal_solution_status == 2  # kSolutionStatusFeasible
    unit = pm.scale[model.objective]
    termination = {highspy.HighsModelStatus.kOptimal: Termination.OPTIMAL,
                   highspy.HighsModelStatus.kInfeasible: Termination.INFEASIBLE,
                   highspy.HighsModelStatus.kTimeLimit: Termination.TIME_LIMIT,
                   }.get(status, Termination.ERROR)
    bound = info.mip_dual_bound * unit if math.isfinite(info.mip_dual_bound) else -math.inf
    return BackendResult(
        values=pm.values() if has else None, termination=termination, bound_s=bound,
        version=f"HiGHS {h.version()} via PuLP {pulp.__version__}",
        message="" if termination is not Termination.ERROR else h.modelStatusToString(status))


@register("highs")
def solve_highs(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "highs", run_highs, prefer="paths")
