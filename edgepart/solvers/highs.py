"""HiGHS backend: the neutral model, scaled as for every MILP backend
(:mod:`edgepart.solvers.milp`), handed to highspy as arrays.

The rows go to HiGHS in one ``addRows`` call of sparse arrays: PuLP's own translation of a
2.2-million-row stage-slot model (NASNet-style, 994 layers on 32 devices) took 27 s past a 60 s
limit, with no way to stop it; here translation checks the clock and is several times faster. The
proven bound is HiGHS's own MIP dual bound (``mip_dual_bound``). Gap tolerances are ``1e-7``
relative and 0 absolute so that "optimal" means the same as everywhere else.

**Time limits.** HiGHS gets the time left as its ``time_limit`` and is asked to stop from its MIP
and simplex interrupt callbacks at the deadline, but some of its steps check neither: on the
NASNet stage-slot model (196 layers, 8 devices) one root mod-k separation round ran 28 s without
a callback (HiGHS's clock: 65 s for a 56 s limit), and on 994 layers x 32 devices presolve
(of the MIP start's completion and of the model) ran 19 s against 8 s left. So with a time limit,
on POSIX, the solve runs in a forked child process that streams each improving solution and a
better dual bound (at most every :data:`BOUND_EVERY_S`) and is killed shortly after the deadline
if it has not answered by then (:mod:`edgepart.solvers.stoppable`, shared with CP-SAT): the answer
is a time-limit stop with the best plan and bound found, at worst the caller's warm start and the
driver's bound. Without a time limit, or without ``os.fork``, HiGHS runs in this process. HiGHS
keeps one global thread pool per process, and a fork of a process whose pool has started hangs in
the child's first solve (tried: highspy 1.16); the child therefore drops the pool it inherited
(``resetGlobalScheduler``) before it solves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

import highspy
import numpy as np

from edgepart.formulations.model import Deadline, LinearModel
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.milp import ScaledModel, scaled, solver_output
from edgepart.solvers.stoppable import Answer, Stream, can_fork, run_stoppable

__all__ = ["INTEGRALITY_TOL", "run_highs", "solve_highs"]

INTEGRALITY_TOL = 1e-9
"""HiGHS's ``mip_feasibility_tolerance`` (default 1e-6). A Boolean at 1e-6 inside a big-M row
(M up to the horizon, 1000 time units) moves a time by about 1e-6 of the horizon: enough for a
"solution" that breaks ``--max-period`` at the Pareto front's 1e-6 steps (found by
tests/test_pareto.py). At 1e-9 the leak is far below the optimality tolerance."""

BOUND_EVERY_S = 0.2
"""A child sends a better dual bound at most this often (the callback fires thousands of times a
second); the bound the parent keeps is at most this old, and valid all the same."""

TERMINATIONS = {highspy.HighsModelStatus.kOptimal: Termination.OPTIMAL,
                highspy.HighsModelStatus.kInfeasible: Termination.INFEASIBLE,
                highspy.HighsModelStatus.kTimeLimit: Termination.TIME_LIMIT,
                highspy.HighsModelStatus.kInterrupt: Termination.TIME_LIMIT}


def run_highs(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model``; ``options.time_limit`` counts from this call (building included)."""
    deadline = Deadline.after(options.time_limit)
    sm = scaled(model, deadline)
    with solver_output(options.verbose):  # HiGHS prints its banner on stdout when created
        h = _highs(sm, options, model.presolve, deadline)
    deadline.check()
    _set_start(h, sm, model.hint)
    if options.time_limit is not None:
        h.setOptionValue("time_limit", max(0.01, deadline.left()))
    with solver_output(options.verbose):
        answer = (_forked(h, deadline) if options.time_limit is not None and can_fork()
                  else _run_here(h, deadline))
    status = None if answer.status is None else highspy.HighsModelStatus(answer.status)
    termination = (Termination.TIME_LIMIT if answer.killed
                   else Termination.ERROR if status is None
                   else TERMINATIONS.get(status, Termination.ERROR))
    unit = sm.scale[sm.objective]
    return BackendResult(
        values=None if answer.values is None else sm.values(answer.values),
        termination=termination,
        bound_s=answer.bound * unit if math.isfinite(answer.bound) else -math.inf,
        version=f"HiGHS {h.version()} via highspy", message=answer.message or (
            "" if termination is not Termination.ERROR or status is None
            else h.modelStatusToString(status)))


def _set_start(h: highspy.Highs, sm: ScaledModel, hint: dict[int, float]) -> None:
    """Give HiGHS the warm start: every variable the hint sets (the formulations' hints are
    complete, so HiGHS checks it at once instead of solving an LP to complete the Booleans:
    5.6 s on the 994-layer NASNet's stage slots)."""
    start = sm.start(hint)
    if start:
        index = np.array(sorted(start), dtype=np.int32)
        h.setSolution(len(index), index, np.array([start[i] for i in index.tolist()]))


def _run_here(h: highspy.Highs, deadline: Deadline) -> Answer:
    """Run HiGHS in this process (no time limit to enforce, or no ``fork``)."""
    _interrupt_at(h, deadline)
    h.run()
    return _final(h)


def _final(h: highspy.Highs) -> Answer:
    info = h.getInfo()
    has = info.primal_solution_status == 2  # kSolutionStatusFeasible
    return Answer(int(h.getModelStatus()), list(h.getSolution().col_value) if has else None,
                  info.mip_dual_bound)


def _interrupt_at(h: highspy.Highs, deadline: Deadline) -> None:
    """Ask HiGHS to stop from its MIP and simplex interrupt callbacks once ``deadline`` passes
    (some long steps check neither: see the module docstring)."""
    stop = _stopper(deadline)
    h.cbMipInterrupt.subscribe(stop)
    h.cbSimplexInterrupt.subscribe(stop)


def _stopper(deadline: Deadline) -> Callable[[highspy.HighsCallbackEvent], None]:
    """An interrupt callback that stops HiGHS once ``deadline`` has passed."""

    def stop(event: highspy.HighsCallbackEvent) -> None:
        if deadline.left() <= 0:
            event.interrupt()

    return stop


def _forked(h: highspy.Highs, deadline: Deadline) -> Answer:
    """Run ``h`` in a child process stopped at ``deadline`` (:func:`run_stoppable`)."""

    def solve(stream: Stream) -> Answer:
        highspy.Highs.resetGlobalScheduler(False)  # the parent's pool: see the module docstring
        _stream(h, deadline, stream)
        h.run()
        return _final(h)

    return run_stoppable(solve, deadline, "HiGHS")


def _stream(h: highspy.Highs, deadline: Deadline, stream: Stream) -> None:
    """Subscribe the callbacks that send improving solutions and better bounds (at most every
    :data:`BOUND_EVERY_S`), and stop HiGHS at ``deadline``."""
    sent_at = [-math.inf]
    stop = _stopper(deadline)

    def improving(event: highspy.HighsCallbackEvent) -> None:
        stream.solution(np.asarray(event.data_out.mip_solution, dtype=float).tolist())

    def mip_interrupt(event: highspy.HighsCallbackEvent) -> None:
        if (time.perf_counter() - sent_at[0] >= BOUND_EVERY_S
                and stream.bound(event.data_out.mip_dual_bound)):
            sent_at[0] = time.perf_counter()
        stop(event)

    h.cbMipImprovingSolution.subscribe(improving)
    h.cbMipInterrupt.subscribe(mip_interrupt)
    h.cbSimplexInterrupt.subscribe(stop)


def _highs(sm: ScaledModel, options: SolveOptions, presolve: bool, deadline: Deadline
           ) -> highspy.Highs:
    """A Highs object holding ``sm`` (minimise its objective variable) and our options; raises
    :class:`OutOfTime` past ``deadline``."""
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
    deadline.check()
    index = np.fromiter((i for coefs, _ in _checked(sm.rows, deadline) for i in coefs),
                        np.int32, int(counts.sum()))
    coef = np.fromiter((c for coefs, _ in _checked(sm.rows, deadline) for c in coefs.values()),
                       float, int(counts.sum()))
    lower = np.array([lo for _, lo in sm.rows], dtype=float)
    deadline.check()
    h.addRows(len(sm.rows), lower, np.full(len(sm.rows), highspy.kHighsInf), len(index), starts,
              index, coef)
    return h


def _checked(rows: Iterable[tuple[dict[int, float], float]], deadline: Deadline
             ) -> Iterator[tuple[dict[int, float], float]]:
    """``rows``, checking ``deadline`` every so many (:meth:`Deadline.check_every`)."""
    for k, row in enumerate(rows):
        deadline.check_every(k)
        yield row


@register("highs")
def solve_highs(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "highs", run_highs, prefer="paths", lattice=True)
