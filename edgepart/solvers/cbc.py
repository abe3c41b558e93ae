"""CBC backend: the neutral model through PuLP, solved by the CBC binary that PuLP ships.

PuLP does not return CBC's bound, so it is read from CBC's own log ("Lower bound:" after a stop,
or the objective less the relative gap tolerance ``1e-7`` after "Optimal solution found").
No MIP start is passed: CBC 2.10 ignores the time limit while it tries to complete one (seen:
148 s for a 20 s limit on Inception-v3); the warm plan still caps the period in the model and is
returned if CBC finds nothing better.

CBC runs with preprocessing off (:data:`CBC_OPTIONS`: its verdicts were wrong both ways here).
It also ignored its time limit during preprocessing (seen: 27 s for a 5 s limit on the
Inception-v3 stage-slot model), so the limit is enforced from outside all the same:
:data:`INTERRUPT_AFTER` seconds past it CBC gets SIGINT (it stops its search and writes its best
solution, like ctrl-c), and :data:`KILL_AFTER` seconds later SIGKILL; a killed run is a time-limit
stop without a plan. (With 0.5 s and 1.5 s a 2 s limit took 4.0 s; the whole call must stay within
the limit + 5% + 1 s.)
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pulp
from pulp.apis import coin_api

from edgepart.formulations.model import Deadline, LinearModel
from edgepart.instance import Instance
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, register
from edgepart.solvers.exact import BackendResult, solve_exact
from edgepart.solvers.highs import INTEGRALITY_TOL, run_highs
from edgepart.solvers.milp import solver_output, to_pulp

__all__ = ["run_cbc", "solve_cbc"]

GAP_REL = 1e-7
ALLOWABLE_GAP = 1e-10
"""CBC's default absolute gap: it stops when ``objective - bound`` is below this or
``GAP_REL * |objective|``, so ``objective * (1 - GAP_REL) - ALLOWABLE_GAP`` is a proven bound."""
INTERRUPT_AFTER = 0.0
KILL_AFTER = 0.5
PROVEN_INFEASIBLE = r"^Problem is infeasible"
"""CBC's log line for a model whose LP relaxation is infeasible (every variable here is bounded,
so its "infeasible or unbounded" means infeasible)."""
CBC_OPTIONS = ("preprocess off",)
"""CBC 2.10's preprocessing is not trusted: it says "infeasible" about feasible models (coin-or/Cbc
issues 737, 740, 747, 749; seen here on 6-7 layer DAGs with direct transfers, where the threshold
search took it as a proof), and it cut the optimum off a 3-layer model (tests/test_exact.py, seed
534247: "optimal" 2.651 where CP-SAT, HiGHS and CBC without preprocessing find 1.532)."""


def run_cbc(model: LinearModel, options: SolveOptions) -> BackendResult:
    """Solve ``model`` with CBC (preprocessing off); where CBC fails (seen: a segmentation fault
    without preprocessing on a 6-variable model), HiGHS answers the same model, and the result's
    version says so."""
    deadline = Deadline.after(options.time_limit)
    result = _run(model, options, list(CBC_OPTIONS))
    if result.termination is not Termination.ERROR or result.values is not None:
        return result
    asked = run_highs(model, options.with_time_left(deadline))
    return replace(asked, version=f"{result.version} failed; answered by {asked.version}",
                   message=asked.message or f"CBC failed ({result.message}); HiGHS answered the "
                   "same model")


def _run(model: LinearModel, options: SolveOptions, cbc_options: list[str]) -> BackendResult:
    """One CBC run; ``options.time_limit`` counts from this call (translating the model
    included)."""
    limit = Deadline.after(options.time_limit)
    pm = to_pulp(model, deadline=limit)
    left = options.with_time_left(limit).time_limit
    deadline = None if left is None else time.monotonic() + left
    version = f"CBC via PuLP {pulp.__version__}"
    with tempfile.TemporaryDirectory(prefix="edgepart-cbc-") as tmp:
        log_path = Path(tmp) / "cbc.log"
        solver = pulp.PULP_CBC_CMD(msg=options.verbose, timeLimit=left,
                                   threads=options.threads, gapRel=GAP_REL,
                                   logPath=str(log_path),
                                   options=[f"randomSeed {options.seed + 1}",
                                            f"integerTolerance {INTEGRALITY_TOL}", *cbc_options])
        solver.tmpDir = tmp  # PuLP's model and solution files go (and go away) with ours
        with solver_output(options.verbose), _deadline(deadline) as stopped:
            try:
                pm.problem.solve(solver)
            except pulp.PulpSolverError:
                if stopped.is_set():
                    return BackendResult(None, Termination.TIME_LIMIT, -math.inf, version,
                                         "CBC killed past the time limit (it did not stop "
                                         "at its own)")
                # seen: CBC 2.10.3 crashes (SIGSEGV) with preprocessing off on a 6-variable model
                return BackendResult(None, Termination.ERROR, -math.inf, version,
                                     f"CBC failed ({' '.join(cbc_options) or 'defaults'}): no "
                                     "answer, no proof")
        log = log_path.read_text() if log_path.exists() else ""
    unit = pm.model.scale[model.objective]
    has = pm.problem.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    termination, bound = _read_log(log)
    if termination is Termination.ERROR and stopped.is_set():
        termination = Termination.TIME_LIMIT  # interrupted at the limit ("Stopped on ctrl-c")
    return BackendResult(values=pm.values() if has else None, termination=termination,
                         bound_s=bound * unit, version=version,
                         message="" if termination is not Termination.ERROR else log[-200:])


@contextmanager
def _deadline(deadline: float | None) -> Iterator[threading.Event]:
    """Stop the CBC process PuLP starts inside this block at ``deadline`` (``time.monotonic``):
    SIGINT :data:`INTERRUPT_AFTER` s past it, SIGKILL :data:`KILL_AFTER` s later. The event is
    set once a signal was sent."""
    stopped = threading.Event()
    if deadline is None:
        yield stopped
        return
    at = deadline + INTERRUPT_AFTER

    class Popen(subprocess.Popen):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            wait = max(0.0, at - time.monotonic())
            self._timers = [threading.Timer(wait, self._stop, (signal.SIGINT,)),
                            threading.Timer(wait + KILL_AFTER, self._stop, (signal.SIGKILL,))]
            for timer in self._timers:
                timer.daemon = True
                timer.start()

        def _stop(self, sig: int) -> None:
            if self.poll() is None:
                stopped.set()
                self.send_signal(sig)

        def wait(self, timeout: float | None = None) -> int:
            try:
                return super().wait(timeout)
            finally:
                for timer in self._timers:
                    timer.cancel()

    saved = coin_api.subprocess
    coin_api.subprocess = types.SimpleNamespace(**{**vars(subprocess), "Popen": Popen})
    try:
        yield stopped
    finally:
        coin_api.subprocess = saved


def _read_log(log: str) -> tuple[Termination, float]:
    """CBC's termination and proven bound (in model units) from its log."""
    result = re.search(r"^Result - (.*)$", log, re.M)
    objective = re.search(r"^Objective value:\s+(\S+)", log, re.M)
    lower = re.search(r"^Lower bound:\s+(\S+)", log, re.M)
    text = result.group(1) if result else ""
    if "infeasible" in text.lower() or re.search(PROVEN_INFEASIBLE, log, re.M):
        return Termination.INFEASIBLE, math.inf
    bound = -math.inf
    if lower:
        bound = _printed_floor(lower.group(1))
    if "Optimal" in text and objective:
        value = float(objective.group(1))
        bound = max(bound, value - GAP_REL * abs(value) - ALLOWABLE_GAP)
    if "Optimal" in text:
        return Termination.OPTIMAL, bound
    if "time" in text.lower():
        return Termination.TIME_LIMIT, bound
    return Termination.ERROR, bound


def _printed_floor(text: str) -> float:
    """A number CBC printed, less one unit of its last printed digit: a value it rounded to 6
    significant digits ("Lower bound: 230.122" for 230.1216...) is then still a lower bound.
    Found by tests/test_pareto.py, where the rounded bound exceeded the optimum."""
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation:
        return -math.inf
    return float(text) - 10.0 ** int(exponent) if isinstance(exponent, int) else -math.inf


@register("cbc")
def solve_cbc(inst: Instance, options: SolveOptions) -> SolveResult:
    return solve_exact(inst, options, "cbc", run_cbc, prefer="paths", lattice=True)
