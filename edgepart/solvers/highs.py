"""HiGHS backend: the neutral model, scaled as for every MILP backend
(:mod:`edgepart.solvers.milp`), handed to highspy as arrays.

The rows go to HiGHS in one ``addRows`` call of sparse arrays: PuLP's own translation of a
2.2-million-row stage-slot model (NASNet-style, 994 layers on 32 devices) took 27 s past a 60 s
limit, with no way to stop it; here translation checks the clock and is several times faster. The
proven bound is HiGHS's own MIP dual bound (``mip_dual_bound``). Gap tolerances are ``1e-7``
relative and 0 absolute so that "optimal" means the same as everywhere else.
"""

from __future__ import annotations

import math

import highspy
import numpy as np

from edgepart.formulations.model import Deadline, LinearModel
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.milp import ScaledModel, scaled, solver_output

__all__ = ["INTEGRALITY_TOL", "run_highs", "solve_highs"]

INTEGRALITY_TOL = 1e-9
"""HiGHS's ``mip_feasibility_tolerance`` (default 1e-6). A Boolean at 1e-6 inside a big-M row
(M up to the horizon, 1000 time units) moves a time by about 1e-6 of the horizon: enough for a
"solution" that breaks ``--max-period`` at the Pareto front's 1e-6 steps (found by
tests/test_pareto.py). At 1e-9 the leak is far below the optimality tolerance."""

TERMINATIONS = {highspy.HighsModelStatus.kOptimal: Termination.OPTIMAL,
                highspy.HighsModelStatus.kInfeasible: Termination.INFEASIBLE,
                highspy.HighsModelStatus.kTimeLimit: Termination.TIME_LIMIT,
                highspy.HighsModelStatus.kInterrupt: Termination.TIME_LIMIT}


def run_highs(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model``; ``options.time_limit`` counts from this call (building included)."""
    deadline = Deadline.after(options.time_limit)
    sm = scaled(model, deadline)
    with solver_output(options.verbose):  # HiGHS prints its banner on stdout when created
        h = _highs(sm, options, model.presolve)
    deadline.check()
    start = sm.start(model.hint)
    booleans = [i for i in start if sm.boolean[i]]
    if booleans:
        h.setSolution(len(booleans), np.array(booleans, dtype=np.int32),
                      np.array([start[i] for i in booleans]))
    if options.time_limit is not None:
        h.setOptionValue("time_limit", max(0.01, deadline.left()))
        _interrupt_at(h, deadline)
    with solver_output(options.verbose):
        h.run()
    info = h.getInfo()
    status = h.getModelStatus()
    has = info.primal_solution_status == 2  # kSolutionStatusFeasible
    termination = TERMINATIONS.get(status, Termination.ERROR)
    unit = sm.scale[sm.objective]
    bound = info.mip_dual_bound * unit if math.isfinite(info.mip_dual_bound) else -math.inf
    return BackendResult(
        values=sm.values(list(h.getSolution().col_value)) if has else None,
        termination=termination, bound_s=bound, version=f"HiGHS {h.version()} via highspy",
        message="" if termination is not Termination.ERROR else h.modelStatusToString(status))


def _interrupt_at(h: highspy.Highs, deadline: Deadline) -> None:
    """Ask HiGHS to stop from its MIP and simplex interrupt callbacks once ``deadline`` passes.
    HiGHS overran its own time limit on NASNet stage-slot models (85 s and 101 s for 60 s); with
    these callbacks one run took 69 s, so some long step still checks neither (not found)."""

    def check(event: highspy.HighsCallbackEvent) -> None:
        if deadline.left() <= 0:
            event.interrupt()

    h.cbMipInterrupt.subscribe(check)
    h.cbSimplexInterrupt.subscribe(check)


def _highs(sm: ScaledModel, options: SolveOptions, presolve: bool) -> highspy.Highs:
    """A Highs object holding ``sm`` (minimise its objective variable) and our options."""
    h = highspy.Highs()
    for name, setting in (("output_flag", options.verbose), ("mip_rel_gap", 1e-7),
                        ("mip_abs_gap", 0.0), ("random_seed", options.seed),
                        ("mip_feasibility_tolerance", INTEGRALITY_TOL),
                        ("presolve", "on" if presolve else "off")):
        h.setOptionValue(name, setting)
    if options.threads is not None:
        h.setOptionValue("threads", options.threads)
    n = len(sm.ub)
    h.addVars(n, np.zeros(n), np.array(sm.ub, dtype=float))
    ints = np.flatnonzero(sm.boolean).astype(np.int32)
    if len(ints):
        h.changeColsIntegrality(len(ints), ints,
                                np.full(len(ints), highspy.HighsVarType.kInteger))
    h.changeColCost(sm.objective, 1.0)
    counts = np.array([len(coefs) for coefs, _ in sm.rows], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    index = np.fromiter((i for coefs, _ in sm.rows for i in coefs), np.int32, int(counts.sum()))
    coef = np.fromiter((c for coefs, _ in sm.rows for c in coefs.values()), float,
                       int(counts.sum()))
    lower = np.array([lo for _, lo in sm.rows], dtype=float)
    h.addRows(len(sm.rows), lower, np.full(len(sm.rows), highspy.kHighsInf), len(index), starts,
              index, coef)
    return h


@register("highs")
def solve_highs(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "highs", run_highs, prefer="paths", lattice=True)
