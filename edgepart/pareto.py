r"""The exact Pareto front of period and latency, by the epsilon-constraint method.

A plan :math:`x` has a period :math:`P(x)` (1 / throughput) and an end-to-end latency
:math:`L(x)` (:mod:`edgepart.cost`). The two conflict: more stages shorten the period and add
transfers to the latency. Plan :math:`y` *dominates* :math:`x` when :math:`P(y) \le P(x)` and
:math:`L(y) \le L(x)`, one of them strictly; the *front* is the set of :math:`(P, L)` pairs of the
plans no plan dominates, one plan per pair.

Method (the epsilon-constraint method of Haimes, Lasdon and Wismer, 1971, in its lexicographic
form, Mavrotas, 2009), with :math:`\varepsilon` = :data:`FRONT_TOL` and :math:`p_1 = +\infty`,
for :math:`k = 1, 2, \dots`:

1. :math:`L_k = \min \{ L(x) : P(x) \le p_k \}` (``solve(objective="latency",
   max_period=p_k)``); stop when this is proven infeasible;
2. :math:`P_k = \min \{ P(x) : L(x) \le L_k (1 + \varepsilon) \}` (``solve(max_latency=...)``,
   warm-started with step 1's plan); point :math:`k` is :math:`(P_k, L_k)` and step 2's plan;
3. :math:`p_{k+1} = P_k (1 - \varepsilon)`.

Everything goes through the public :func:`edgepart.solvers.base.solve`, so any exact backend
(``cpsat``, ``highs``, ``cbc``, ``brute``) and formulation can draw the front, and every plan is
re-checked and re-evaluated by the shared cost model. The first point is the least-latency plan
(the least period among those), the last the least-period plan: the ends equal ``solve
--objective latency`` and ``solve --objective bottleneck``.

Why the front is exact (each solve proven optimal; equalities within :math:`\varepsilon`):

* *Every point is a lexicographic optimum, hence on the front.* Step 1's plan has period at most
  :math:`p_k` and is feasible for step 2, so :math:`P_k \le p_k`. If some :math:`y` had
  :math:`P(y) \le P_k` and :math:`L(y) \le L_k`, then :math:`P(y) \le p_k`, so
  :math:`L(y) \ge L_k` by step 1, so :math:`L(y) = L_k`, and then :math:`P(y) \ge P_k` by step 2:
  :math:`y` ties with point :math:`k` and does not dominate it.
* *No point is missed.* Let :math:`y` be on the front. If :math:`P(y) > P_1`, then
  :math:`L(y) \ge L_1` (the least latency of all), so point 1 dominates :math:`y`. If
  :math:`P_{k+1} \le P(y) \le p_{k+1}`, then :math:`y` was a candidate in step 1 of round
  :math:`k+1`, so :math:`L(y) \ge L_{k+1}` and point :math:`k+1` dominates or equals :math:`y`.
  Below the last point, step 1 proved that no plan has :math:`P \le p_{K+1}`. What remains,
  :math:`p_{k+1} < P(y) < P_k`, is a band of relative width :math:`\varepsilon` under a point:
  two points closer than that in period are one point.
* *It ends.* There are finitely many plans, and every round lowers :math:`p` below a period no
  later plan can have.

:data:`FRONT_TOL` equals :data:`edgepart.results.OPTIMALITY_TOL`: a solve is called optimal when it
is proven within that relative tolerance, so the front cannot be sharper. The latency cap of step
2 carries the same slack, so that step 1's own plan is never cut off by a floating-point hair
(a backend's limit rows are exact or rounded toward feasible, and the shared checker then allows
a relative 1e-9).

A point is *proven* only when both of its solves are optimal. A solve stopped by the time limit
still gives a point (its plan is valid and evaluated), marked unproven with its gap, and the front
is then *incomplete*: it may miss points or hold points a better plan would dominate. Points
dominated by a later one are dropped (this happens only after an unproven solve). ``time_limit``
bounds the whole call: each solve may use half of the time left, so one hard solve cannot starve
the rest; when it runs out, the front stops there and is marked incomplete.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from edgepart.errors import InputError
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import OPTIMALITY_TOL, SolutionStatus, SolveResult, Termination, relative_gap
from edgepart.solvers.base import Method, Objective, SolveOptions, get_method

__all__ = ["COLUMNS", "FRONT_TOL", "ParetoFront", "ParetoPoint", "pareto", "pareto_front"]

FRONT_TOL = OPTIMALITY_TOL
"""Relative tolerance of the front: two points closer than this in period are one point (the next
round asks for a period below ``P_k * (1 - FRONT_TOL)``), and step 2 caps the latency at
``L_k * (1 + FRONT_TOL)``."""

MIN_SLICE_S = 0.05
"""With a time limit, the front stops when less than this many seconds are left for a solve."""

COLUMNS = ("period_s", "latency_s", "throughput_per_s", "proven", "period_bound_s",
           "latency_bound_s", "gap", "stages", "devices", "max_period_s", "solve_time_s", "plan")
"""Columns of :func:`pareto`'s table, one row per point, least latency first."""


@dataclass(frozen=True)
class ParetoPoint:
    """One point of the front: its plan, both objectives and the proofs behind them.

    ``latency_bound_s`` is step 1's proven lower bound on the latency of any plan with period at
    most ``max_period_s``; ``period_bound_s`` is step 2's lower bound on the period of any plan
    with at most this latency. ``gap`` is the larger of the two relative gaps.
    """

    plan: Plan
    period_s: float
    latency_s: float
    proven: bool
    period_bound_s: float
    latency_bound_s: float
    max_period_s: float
    solve_time_s: float
    message: str = ""

    @property
    def throughput_per_s(self) -> float:
        return 1.0 / self.period_s if self.period_s > 0 else math.inf

    @property
    def gap(self) -> float:
        return max(relative_gap(self.period_s, self.period_bound_s),
                   relative_gap(self.latency_s, self.latency_bound_s))

    def row(self) -> dict[str, Any]:
        """The point as a row of :data:`COLUMNS` (``plan`` is the :class:`Plan`)."""
        return {"period_s": self.period_s, "latency_s": self.latency_s,
                "throughput_per_s": self.throughput_per_s, "proven": self.proven,
                "period_bound_s": self.period_bound_s, "latency_bound_s": self.latency_bound_s,
                "gap": self.gap, "stages": len(self.plan.stages),
                "devices": tuple(s.device for s in self.plan.stages),
                "max_period_s": self.max_period_s, "solve_time_s": self.solve_time_s,
                "plan": self.plan}

    def to_dict(self) -> dict[str, Any]:
        """The point as JSON-ready data (the plan in its file form)."""
        out = self.row()
        out["devices"] = list(out["devices"])
        out["plan"] = self.plan.to_dict()
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class ParetoFront:
    """The points (least latency first) and whether they are the whole, proven front.

    ``complete``: every point is proven and the last round proved that no plan has a smaller
    period. ``infeasible``: the instance has no plan at all (proven; then there are no points).
    """

    instance: str
    solver: str
    points: tuple[ParetoPoint, ...]
    complete: bool
    infeasible: bool
    message: str
    wall_time_s: float
    solves: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def frame(self) -> pd.DataFrame:
        """One row per point with :data:`COLUMNS`; the summary is in ``frame.attrs``."""
        frame = pd.DataFrame([p.row() for p in self.points], columns=list(COLUMNS))
        frame.attrs.update(instance=self.instance, solver=self.solver, complete=self.complete,
                           infeasible=self.infeasible, message=self.message,
                           wall_time_s=self.wall_time_s, solves=self.solves,
                           warnings=list(self.warnings))
        return frame

    def to_dict(self) -> dict[str, Any]:
        """The ``edgepart pareto --json`` object."""
        return {"instance": self.instance, "solver": self.solver, "complete": self.complete,
                "infeasible": self.infeasible, "message": self.message,
                "wall_time_s": self.wall_time_s, "solves": self.solves,
                "points": [p.to_dict() for p in self.points], "warnings": list(self.warnings)}


def pareto(inst: Instance, solver: str = "auto", *, time_limit: float | None = None,
           threads: int | None = None, formulation: str = "auto", verbose: bool = False,
           progress: Callable[[ParetoPoint], None] | None = None) -> pd.DataFrame:
    """The Pareto front of period and latency, least latency first (see the module docstring).

    Parameters
    ----------
    inst : Instance
    solver : str
        A registered exact method: ``cpsat`` (default), ``highs``, ``cbc`` or ``brute``. A
        heuristic gives unproven points at best.
    time_limit : float or None
        Seconds for the whole front (each solve may use half of what is left).
    threads, formulation, verbose
        Passed to every solve (:class:`SolveOptions`).
    progress : callable or None
        Called with each :class:`ParetoPoint` as soon as it is found.

    Returns
    -------
    pandas.DataFrame
        One row per point with :data:`COLUMNS`. ``frame.attrs`` holds ``complete`` (every point
        proven and nothing missed), ``infeasible``, ``message``, ``wall_time_s``, ``solves`` and
        ``warnings``. An infeasible instance gives an empty frame with ``infeasible`` true.

    Raises
    ------
    InputError
        For an unknown solver, a bad formulation, time limit or thread count.

    References
    ----------
    Y. Y. Haimes, L. S. Lasdon, D. A. Wismer, "On a bicriterion formulation of the problems of
    integrated system identification and system optimization", IEEE Trans. SMC 1(3), 1971.
    G. Mavrotas, "Effective implementation of the epsilon-constraint method in multi-objective
    mathematical programming problems", Appl. Math. Comput. 213(2), 2009.
    """
    return pareto_front(inst, solver, time_limit=time_limit, threads=threads,
                        formulation=formulation, verbose=verbose, progress=progress).frame()


def pareto_front(inst: Instance, solver: str = "auto", *, time_limit: float | None = None,
                 threads: int | None = None, formulation: str = "auto", verbose: bool = False,
                 progress: Callable[[ParetoPoint], None] | None = None) -> ParetoFront:
    """:func:`pareto` as a :class:`ParetoFront` record (what the CLI prints)."""
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise InputError(f"time_limit: must be a positive number, got {time_limit}")
    method = get_method(solver)
    base = SolveOptions(threads=threads, formulation=formulation, verbose=verbose)  # checks them
    start = time.perf_counter()
    solves = _Solves(inst, solver, method, base,
                     None if time_limit is None else start + time_limit)
    points, complete, infeasible, message = _sweep(solves, progress)
    kept, warnings = _non_dominated(points)
    return ParetoFront(inst.name, solver, tuple(kept), complete and len(kept) == len(points),
                       infeasible, message, time.perf_counter() - start, solves.count,
                       tuple(warnings))


@dataclass
class _Solves:
    """The front's solves: each with half of the time left before ``deadline`` (module
    docstring), counted."""

    inst: Instance
    solver: str
    method: Method
    base: SolveOptions
    deadline: float | None
    count: int = 0

    def run(self, objective: Objective, **limits: Any) -> tuple[SolveResult, float] | None:
        """One solve and its wall time; ``None`` when no time is left."""
        slice_s = None
        if self.deadline is not None:
            left = self.deadline - time.perf_counter()
            if left < MIN_SLICE_S:
                return None
            slice_s = max(left / 2, MIN_SLICE_S)
        options = SolveOptions(objective=objective, time_limit=slice_s,
                               threads=self.base.threads, formulation=self.base.formulation,
                               verbose=self.base.verbose, **limits)
        t0 = time.perf_counter()
        result = self._solve(options)
        self.count += 1
        return result, time.perf_counter() - t0

    def _solve(self, options: SolveOptions) -> SolveResult:
        try:
            return self.method(self.inst, options)
        except InputError:
            raise
        except Exception as err:  # a solver failure ends the front, it does not lose it
            return SolveResult(method=self.solver, termination=Termination.ERROR,
                               status=SolutionStatus.NONE, objective=options.objective.value,
                               message=f"{type(err).__name__}: {err}")


def _sweep(solves: _Solves, progress: Callable[[ParetoPoint], None] | None
           ) -> tuple[list[ParetoPoint], bool, bool, str]:
    """The rounds of the module docstring until step 1 finds no plan or the time is up: the
    points found, whether the front is complete, whether the instance is infeasible, and why
    the rounds ended."""
    points: list[ParetoPoint] = []
    max_period = math.inf
    while True:
        first = solves.run(Objective.LATENCY,
                           max_period=None if math.isinf(max_period) else max_period)
        if first is None:
            return points, False, False, _time_up(points)
        fast, t_fast = first
        if not fast.has_plan:
            return (points, *_no_plan_end(fast, points, solves.solver, max_period))
        assert fast.plan is not None and fast.metrics is not None
        cap = fast.metrics.latency_s * (1 + FRONT_TOL)
        second = solves.run(Objective.BOTTLENECK, max_latency=cap, warm_start=fast.plan)
        point = _point(fast, t_fast, second, max_period)
        points.append(point)
        if progress is not None:
            progress(point)
        if second is None:
            return points, False, False, _time_up(points)
        # strictly below this point (and below the cap, should a plan break it): no loop
        max_period = min(point.period_s, max_period) * (1 - FRONT_TOL)


def _no_plan_end(fast: SolveResult, points: list[ParetoPoint], solver: str,
                 max_period: float) -> tuple[bool, bool, str]:
    """(complete, infeasible, message) when step 1 gave no plan below ``max_period``: proven
    infeasible ends the front (complete when every point is proven), else it stops short."""
    if fast.status is SolutionStatus.INFEASIBLE:
        complete = all(p.proven for p in points)
        if not points:
            return complete, True, fast.message or "no plan exists"
        return complete, False, (_summary(points) if complete else
                                 f"{len(points)} points, not all proven: the front may miss "
                                 "points")
    if fast.termination is Termination.TIME_LIMIT:
        return False, False, _time_up(points)
    return False, False, (f"{solver} ({fast.termination.value}) gave no plan with period "
                          f"<= {max_period:.6g} s: {fast.message or 'no reason given'}")


def _point(fast: SolveResult, t_fast: float, second: tuple[SolveResult, float] | None,
           max_period: float) -> ParetoPoint:
    """Point k from step 1's result and step 2's (step 1's plan when step 2 found none)."""
    assert fast.plan is not None and fast.metrics is not None
    latency_bound = fast.bound_s
    if second is not None and second[0].has_plan:
        slow, t_slow = second
        assert slow.plan is not None and slow.metrics is not None
        proven = (fast.status is SolutionStatus.OPTIMAL
                  and slow.status is SolutionStatus.OPTIMAL)
        notes = [r.message for r in (fast, slow) if r.message]
        return ParetoPoint(slow.plan, slow.metrics.bottleneck_s, slow.metrics.latency_s, proven,
                           slow.bound_s, latency_bound, max_period, t_fast + t_slow,
                           "; ".join(notes))
    note = "no period solve" if second is None else (
        f"period solve gave no plan ({second[0].termination.value})")
    return ParetoPoint(fast.plan, fast.metrics.bottleneck_s, fast.metrics.latency_s, False,
                       -math.inf, latency_bound, max_period,
                       t_fast + (0.0 if second is None else second[1]), note)


def _time_up(points: list[ParetoPoint]) -> str:
    where = (f" below period {points[-1].period_s:.6g} s" if points else "")
    return (f"time limit reached after {len(points)} point{'s' if len(points) != 1 else ''}: "
            f"the front may continue{where}")


def _summary(points: list[ParetoPoint]) -> str:
    return (f"{len(points)} point{'s' if len(points) != 1 else ''}, each proven; no plan has a "
            f"period below {points[-1].period_s:.6g} s")


def _dominates(a: ParetoPoint, b: ParetoPoint) -> bool:
    tol = FRONT_TOL
    return (a.period_s <= b.period_s * (1 + tol) and a.latency_s <= b.latency_s * (1 + tol)
            and (a.period_s < b.period_s * (1 - tol) or a.latency_s < b.latency_s * (1 - tol)))


def _non_dominated(points: list[ParetoPoint]) -> tuple[list[ParetoPoint], list[str]]:
    """Drop points another point dominates (after an unproven solve); a proven point dominated
    would mean a wrong proof, which is reported."""
    kept, warnings = [], []
    for p in points:
        by = next((q for q in points if _dominates(q, p)), None)
        if by is None:
            kept.append(p)
        elif p.proven:
            warnings.append(f"proven point (period {p.period_s:.9g} s, latency "
                            f"{p.latency_s:.9g} s) is dominated by (period {by.period_s:.9g} s, "
                            f"latency {by.latency_s:.9g} s): a solver's proof is wrong")
    return kept, warnings
