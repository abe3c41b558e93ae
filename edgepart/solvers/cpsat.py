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

**Time limits.** CP-SAT gets the time left as ``max_time_in_seconds``, but some of its presolve
steps do not look at the clock: on the NASNet stage-slot model of 994 layers on 32 devices
(3 million constraints) presolve ran 28.1 s with 23.4 s left ("Stopped after presolve"), and
``solve --time-limit 60`` took 64.9-66.5 s where 64 s are allowed; on 300 layers x 16 devices
one step (``TransformClausesToExactlyOne``, bounded by deterministic time, not by the clock) ran
2.9 s, and CP-SAT given 5.5 s returned after 9.2 s (2-core host shared with other jobs). So with
a time limit, on POSIX, the solve runs in a forked child process (:mod:`edgepart.solvers.stoppable`,
shared with HiGHS): a solution callback sends each improving solution (CP-SAT's integer values,
which this process scales and decodes as it would its own) with its bound, CP-SAT's best-bound
callback each better proven bound, and the child is killed shortly after the deadline if it has
not answered by then, keeping the last solution and bound received (a solution CP-SAT found, a
bound it had proven). Without a time limit, or without ``os.fork``, CP-SAT runs in this process.

Forking is safe here because no CP-SAT thread exists at the fork: CP-SAT starts its workers
inside ``solve`` and joins them before ``solve`` returns (measured: a process has the same number
of threads before and after an in-process solve), the model and the solver object are plain
data until then, and the child starts its own workers. Other threads of this process (e.g.
HiGHS's pool after an in-process HiGHS run) are not used by the child's CP-SAT.

CP-SAT's log (``--verbose``) goes to stderr through a log callback (``log_to_stdout`` off), in
this process and in the child alike, so that stdout carries only edgepart's output (``--json``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from functools import partial
from importlib.metadata import version

from ortools.sat.python import cp_model

from edgepart.formulations.model import Constraint, Deadline, Dim, LinearModel, Rounding
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.stoppable import Answer, Stream, can_fork, run_stoppable

__all__ = ["PROBING_LEVEL", "TIME_STEPS", "run_cpsat", "solve_cpsat"]

TIME_STEPS = 10**9

DEFAULT_WORKERS = max(3, min(8, (os.cpu_count() or 1) + 1))
"""CP-SAT's portfolio size when ``threads`` is not given: on the 2-core machines here 3 workers
proved ResNet-50 on 8 devices in 3-4 s where 8 workers took 7-18 s (bench/solve_times.py)."""


def run_cpsat(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model``; ``options.time_limit`` counts from this call (building included). With a
    time limit on POSIX the solve runs in a child process stopped at the deadline (see the
    module docstring)."""
    deadline = Deadline.after(options.time_limit)
    cp, scale = _cp_model(model, deadline)
    solver = _solver(options, deadline)
    answer = (run_stoppable(partial(_solve_streaming, solver, cp), deadline, "CP-SAT")
              if options.time_limit is not None and can_fork() else _solve(solver, cp))
    status = None if answer.status is None else cp_model.CpSolverStatus(answer.status)
    termination = (Termination.TIME_LIMIT if answer.killed
                   else Termination.ERROR if status is None
                   else TERMINATIONS.get(status, Termination.TIME_LIMIT))
    return BackendResult(
        values=(None if answer.values is None
                else [v * s for v, s in zip(answer.values, scale, strict=True)]),
        termination=termination,
        bound_s=answer.bound * scale[model.objective],
        version=f"OR-Tools CP-SAT {version('ortools')}",
        message=answer.message or ("" if answer.values is not None or status is None
                                   or termination is not Termination.ERROR else status.name))


TERMINATIONS = {cp_model.OPTIMAL: Termination.OPTIMAL, cp_model.INFEASIBLE: Termination.INFEASIBLE,
                cp_model.MODEL_INVALID: Termination.ERROR}
"""CP-SAT's statuses; any other (``FEASIBLE``, ``UNKNOWN``) is a stop at its time limit."""


def _cp_model(model: LinearModel, deadline: Deadline) -> tuple[cp_model.CpModel, list[float]]:
    """``model`` as a CP-SAT model with its hint, and the scale of each variable (the model's
    value is ``scale[i]`` times CP-SAT's). Variable ``i`` is CP-SAT's variable ``i`` (created
    in order, and nothing else creates variables), so a response's ``solution`` lists the values
    in the model's order."""
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
    for i, value in model.hint.items():  # numbers rounded down: the integer model's rows then
        # hold at a complete hint (tests/test_hints.py); to nearest broke P >= in + C + out
        cp.add_hint(xs[i], math.floor(value / scale[i]) if not model.vars[i].boolean
                    else bool(value))
    deadline.check()
    return cp, scale


def _solver(options: SolveOptions, deadline: Deadline) -> cp_model.CpSolver:
    """A solver with our parameters; its log, when verbose, goes to stderr (stdout carries only
    edgepart's own output, ``--json``)."""
    solver = cp_model.CpSolver()
    params = solver.parameters
    if options.time_limit is not None:
        params.max_time_in_seconds = max(0.01, deadline.left())
    params.num_workers = options.threads or DEFAULT_WORKERS
    params.random_seed = options.seed
    params.log_search_progress = options.verbose
    params.log_to_stdout = False
    solver.log_callback = _log_line
    params.relative_gap_limit = 0.0
    params.cp_model_presolve = bool(options.extra.get("presolve", True))
    params.cp_model_probing_level = PROBING_LEVEL
    return solver


def _log_line(line: str) -> None:
    print(line, file=sys.stderr)


def _solve(solver: cp_model.CpSolver, cp: cp_model.CpModel,
           callback: cp_model.CpSolverSolutionCallback | None = None) -> Answer:
    """Solve in this process. The final bound counts only with a solution, as before: without
    one (``UNKNOWN``, ``INFEASIBLE``) the response's bound is not read as a proof."""
    status = solver.solve(cp, callback)
    has = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    return Answer(int(status), list(solver.response_proto.solution) if has else None,
                  solver.best_objective_bound if has else -math.inf)


def _solve_streaming(solver: cp_model.CpSolver, cp: cp_model.CpModel, stream: Stream) -> Answer:
    """Solve in the forked child, sending each improving solution and each better bound."""
    streamer = _Streamer(stream)
    solver.best_bound_callback = streamer.on_bound
    return _solve(solver, cp, streamer)


class _Streamer(cp_model.CpSolverSolutionCallback):
    """Sends each solution CP-SAT finds (each improves on the last) and each better bound it
    proves (CP-SAT calls :meth:`on_bound` when its bound improves, solution or not)."""

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream

    def on_solution_callback(self) -> None:
        self.stream.solution(self.response_proto.solution)
        self.stream.bound(self.best_objective_bound)

    def on_bound(self, bound: float) -> None:
        self.stream.bound(bound)


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
