"""CP-SAT backend (OR-Tools): the neutral model with integer coefficients.

Integer time scale: one unit is ``cap / 10**9`` seconds, where ``cap`` bounds every time variable
(the warm-start plan's objective, else the instance's horizon; see :data:`TIME_STEPS`).
Every coefficient and constant of a real-valued row (time lower bounds, capacities and user limits
alike) is rounded *up* in ``sum(c * x) + k >= 0``, so the integer model is a relaxation of the real
one (:mod:`edgepart.formulations.model` says why): the integer optimum, times the unit, is a valid
lower bound, and "infeasible" is a proof. Bytes are whole bytes. The plan decoded from the
integer solution is checked and re-evaluated in floating point by the cost model (a plan that
breaks a capacity by a rounding unit is rejected there). Enforced constraints use
``only_enforce_if``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from importlib.metadata import version

from ortools.sat.python import cp_model

from edgepart.formulations.model import Constraint, Deadline, Dim, LinearModel, Rounding
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact

__all__ = ["PROBING_LEVEL", "TIME_STEPS", "run_cpsat", "solve_cpsat"]

TIME_STEPS = 10**9

DEFAULT_WORKERS = max(3, min(8, (os.cpu_count() or 1) + 1))
"""CP-SAT's portfolio size when ``threads`` is not given: on the 2-core machines here 3 workers
proved ResNet-50 on 8 devices in 3-4 s where 8 workers took 7-18 s (bench/solve_times.py)."""


def run_cpsat(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model``; ``options.time_limit`` counts from this call (building included)."""
    deadline = Deadline.after(options.time_limit)
    units = {Dim.TIME: model.max_coef(Dim.TIME) / TIME_STEPS, Dim.BYTES: 1.0, Dim.COUNT: 1.0}
    cp = cp_model.CpModel()
    scale = [1.0 if v.boolean else units[v.dim] for v in model.vars]
    xs = [cp.new_bool_var(v.name) if v.boolean
          else cp.new_int_var(0, math.ceil(v.ub / scale[i]), v.name)
          for i, v in enumerate(model.vars)]
    for k, con in enumerate(model.constraints):
        deadline.check_every(k)
        _add(cp, con, xs, scale, units[con.dim])
    cp.minimize(xs[model.objective])
    for i, value in model.hint.items():
        cp.add_hint(xs[i], round(value / scale[i]) if not model.vars[i].boolean else bool(value))
    solver = cp_model.CpSolver()
    params = solver.parameters
    if options.time_limit is not None:
        deadline.check()
        params.max_time_in_seconds = deadline.left()
    params.num_workers = options.threads or DEFAULT_WORKERS
    params.random_seed = options.seed
    params.log_search_progress = options.verbose
    params.relative_gap_limit = 0.0
    params.cp_model_presolve = bool(options.extra.get("presolve", True))
    params.cp_model_probing_level = PROBING_LEVEL
    status = solver.solve(cp)
    unit = scale[model.objective]
    has = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    termination = {cp_model.OPTIMAL: Termination.OPTIMAL,
                   cp_model.INFEASIBLE: Termination.INFEASIBLE,
                   cp_model.MODEL_INVALID: Termination.ERROR}.get(status, Termination.TIME_LIMIT)
    return BackendResult(
        values=[solver.value(x) * s for x, s in zip(xs, scale, strict=True)] if has else None,
        termination=termination,
        bound_s=solver.best_objective_bound * unit if has else -math.inf,
        version=f"OR-Tools CP-SAT {version('ortools')}",
        message="" if has or termination is not Termination.ERROR else solver.status_name(status))


PROBING_LEVEL = 0
"""CP-SAT's presolve probing is off (its default is 2): with it, CP-SAT 9.15 reported "optimal"
40.132 ms on the stage-slot model of inception_v3_8nodes capped by the single-device warm start
(64.18 ms), where the optimum is 33.86 ms; the same integer model without presolve, or with
presolve but no probing, gives 33.86 ms (so the model admits it; one worker or eight alike, with
or without a hint; a time unit of cap / 10**8 hid it, 10**10 did not). Measured on six shipped
instances, probing off took 0.8-1.2x the time (tests/test_exact.py keeps the case)."""

ROUND: dict[Rounding, Callable[[float], int]] = {Rounding.RELAX: math.ceil, Rounding.EXACT: round}


def _add(cp: cp_model.CpModel, con: Constraint, xs: list[cp_model.IntVar], scale: list[float],
         unit: float) -> None:
    rnd = ROUND[con.rounding]
    coefs: dict[int, float] = {}
    for c, i in con.terms:
        coefs[i] = coefs.get(i, 0.0) + c * scale[i] / unit
    items = [(xs[i], int(rnd(c))) for i, c in coefs.items() if rnd(c) != 0]
    expr = cp_model.LinearExpr.weighted_sum([x for x, _ in items], [c for _, c in items])
    ct = cp.add(expr >= -int(rnd(con.const / unit)))
    if con.enforce:
        ct.only_enforce_if([xs[i] for i in con.enforce])


@register("cpsat")
def solve_cpsat(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "cpsat", run_cpsat)
