"""Every method on one instance next to the exact optimum: how far is each from optimal?

:func:`run_comparison` runs the heuristics and DPs (:data:`DEFAULT_METHODS`), then the exact
reference (``auto`` when registered; ``brute`` otherwise, which only takes tiny instances),
warm-started with the best heuristic plan. Every plan is scored by the one cost model. The
*reference* is the proven optimum (the best objective among runs whose bound proves it) or, when
nothing is proven, the best proven lower bound (the largest ``bound_s`` of any run, and
:func:`edgepart.bounds.quick_bound` for the period). ``gap_pct`` is
``100 * (objective - reference) / reference``: the gap to the optimum when it is proven, an upper
bound on it otherwise.

:func:`compare` returns the table; many instances and methods at once, in parallel and resumable,
are :mod:`edgepart.sweep`'s job.

Beyond pipeline plans (``plan_space``, see :mod:`edgepart.plan`) the methods are the device-group
baselines (:data:`GROUP_BASELINES`) and the exact reference is the ``groups`` DP, the optimum over
that plan space.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from edgepart.bounds import quick_bound
from edgepart.cost import StageMetrics
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import OPTIMALITY_TOL, SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import METHODS, Objective, PlanSpace, SolveOptions, get_method

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "GROUP_BASELINES",
    "Comparison",
    "MethodRun",
    "compare",
    "default_exact",
    "run_comparison",
]

DEFAULT_METHODS = ("dp", "dp_ideals", "local", "pipeedge", "seifer", "greedy", "random", "even",
                   "amp4ec", "neurosurgeon")
"""Heuristics and DPs compared by default (in table order, after the exact reference)."""
GROUP_BASELINES = ("flexpie", "onedim", "grid2d", "dataparallel")
"""Methods compared by default beyond pipeline plans (the reference is then ``groups``)."""
COLUMNS = ("method", "bottleneck_s", "throughput_per_s", "latency_s", "gap_pct", "solve_time_s",
           "status")
"""Columns of :func:`compare`'s table."""
DETAIL_COLUMNS = (*COLUMNS, "objective_s", "bound_s", "termination", "mean_draw_s", "message")
"""Columns of :meth:`Comparison.details`."""


def default_exact(plan_space: PlanSpace | str = PlanSpace.PIPELINE) -> tuple[str, ...]:
    """``("auto",)`` (the default exact method) when registered, else ``("brute",)``; beyond
    pipeline plans ``("groups",)``."""
    get_method("brute")  # loads every built-in method
    if PlanSpace(plan_space) is not PlanSpace.PIPELINE:
        return ("groups",)
    return ("auto",) if "auto" in METHODS else ("brute",)


@dataclass(frozen=True)
class MethodRun:
    """One method's result and the wall time ``compare`` measured around it."""

    method: str
    result: SolveResult
    wall_s: float
    exact: bool = False

    @property
    def status(self) -> str:
        r = self.result
        if r.has_plan:
            if r.status is SolutionStatus.OPTIMAL:
                return "optimal"
            return "time_limit" if r.termination is Termination.TIME_LIMIT else "feasible"
        return "no_plan" if r.termination is Termination.FINISHED else r.termination.value


@dataclass(frozen=True)
class Comparison:
    """All runs on one instance and the reference they are measured against."""

    instance: str
    objective: Objective
    runs: tuple[MethodRun, ...]
    reference_s: float
    proven: bool

    @property
    def optimum(self) -> MethodRun | None:
        """The run holding the proven optimum (else the best exact run with a plan)."""
        pool = [r for r in self.runs if r.result.status is SolutionStatus.OPTIMAL] or [
            r for r in self.runs if r.exact and r.result.has_plan]
        if not pool:
            return None
        best = min(r.result.objective_s for r in pool)
        # equal within the tolerance: the first in run order (the exact reference first)
        return next(r for r in pool if r.result.objective_s <= best * (1 + OPTIMALITY_TOL))

    def gap_pct(self, run: MethodRun) -> float:
        ref, value = self.reference_s, run.result.objective_s
        if not run.result.has_plan or not (math.isfinite(ref) and ref > 0):
            return math.nan
        return 100.0 * (value - ref) / ref

    @property
    def violations(self) -> list[str]:
        """Runs whose plan beats the proven optimum (a bug somewhere; should be empty)."""
        if not self.proven:
            return []
        return [f"{r.method}: {r.result.objective_s:.9g} < proven optimum {self.reference_s:.9g}"
                for r in self.runs if r.result.has_plan
                and r.result.objective_s < self.reference_s * (1 - OPTIMALITY_TOL)]

    def _row(self, run: MethodRun) -> dict[str, Any]:
        r, m = run.result, run.result.metrics
        return {"method": run.method,
                "bottleneck_s": m.bottleneck_s if m else math.nan,
                "throughput_per_s": m.throughput_per_s if m else math.nan,
                "latency_s": m.latency_s if m else math.nan,
                "gap_pct": self.gap_pct(run), "solve_time_s": run.wall_s, "status": run.status,
                "objective_s": r.objective_s if r.has_plan else math.nan,
                "bound_s": r.bound_s, "termination": r.termination.value,
                "mean_draw_s": float(r.extra.get("mean_s", math.nan)), "message": r.message}

    def details(self) -> pd.DataFrame:
        """One row per run with :data:`DETAIL_COLUMNS`."""
        return pd.DataFrame([self._row(r) for r in self.runs], columns=list(DETAIL_COLUMNS))

    def frame(self) -> pd.DataFrame:
        """One row per run with :data:`COLUMNS`."""
        return self.details()[list(COLUMNS)]

    def to_dict(self) -> dict[str, Any]:
        """The ``edgepart compare --json`` object."""
        best = self.optimum
        optimum: dict[str, Any] = {
            "objective": self.objective.value, "reference_s": self.reference_s,
            "proven": self.proven, "method": best.method if best else None}
        if best is not None and best.result.metrics is not None:
            m = best.result.metrics
            optimum.update(bottleneck_s=m.bottleneck_s, latency_s=m.latency_s,
                           bound_s=best.result.bound_s, solve_time_s=best.wall_s,
                           stages=[_stage_summary(s) for s in m.stages])
        keys = ("method", "bottleneck_s", "throughput_per_s", "latency_s", "gap_pct",
                "solve_time_s", "status", "message")
        methods = [{k: row[k] for k in keys} for row in (self._row(r) for r in self.runs)]
        return {"instance": self.instance, "optimum": optimum, "methods": methods,
                "warnings": self.violations}


def _stage_summary(s: StageMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {"device": s.device, "layers": len(s.layers),
                           "first_layer": s.layers[0], "last_layer": s.layers[-1]}
    if s.devices:
        out.update(mode=s.mode.value, devices=list(s.devices))
    return out


def _run(inst: Instance, method: str, options: SolveOptions, exact: bool) -> MethodRun:
    fn = get_method(method, options.plan_space)
    start = time.perf_counter()
    try:
        result = fn(inst, options)
    except Exception as err:  # a failure becomes a row, not a crash
        result = SolveResult(method=method, termination=Termination.ERROR,
                             status=SolutionStatus.NONE, objective=options.objective.value,
                             message=f"{type(err).__name__}: {err}")
    return MethodRun(method, result, time.perf_counter() - start, exact)


def _reference(inst: Instance, runs: Sequence[MethodRun], objective: Objective
               ) -> tuple[float, bool]:
    proven = [r.result.objective_s for r in runs if r.result.status is SolutionStatus.OPTIMAL]
    if proven:
        return min(proven), True
    bounds = [r.result.bound_s for r in runs if math.isfinite(r.result.bound_s)]
    if objective is Objective.BOTTLENECK:
        bounds.append(quick_bound(inst))
    best = max(bounds, default=math.nan)
    return (best, False) if best > 0 else (math.nan, False)


def run_comparison(inst: Instance, methods: Sequence[str] | None = None,
                   exact: Sequence[str] | None = None, *, time_limit: float | None = 30.0,
                   objective: Objective | str = Objective.BOTTLENECK, seed: int = 0,
                   plan_space: PlanSpace | str = PlanSpace.PIPELINE, max_group: int | None = None
                   ) -> Comparison:
    """Run ``methods`` (default :data:`DEFAULT_METHODS`), then the ``exact`` reference (default
    :func:`default_exact`; ``()`` for none) warm-started with the best plan found so far.

    Parameters
    ----------
    inst : Instance
    methods, exact : sequence of registered method names
    time_limit : float or None
        Seconds per method (heuristics finish well within it).
    objective : ``"bottleneck"`` (period) or ``"latency"``
    seed : int
        Passed to every method (the random baseline's draws).
    plan_space, max_group
        Which plans to search (:class:`~edgepart.solvers.base.PlanSpace`); beyond pipeline
        plans the default methods are :data:`GROUP_BASELINES` and the reference ``groups``.

    Raises
    ------
    InputError
        For an unknown method name.
    """
    options = SolveOptions(objective=Objective(objective), time_limit=time_limit, seed=seed,
                           plan_space=PlanSpace(plan_space), max_group=max_group)
    exact = default_exact(options.plan_space) if exact is None else tuple(exact)
    pipeline = options.plan_space is PlanSpace.PIPELINE
    names = [m for m in dict.fromkeys(methods or (DEFAULT_METHODS if pipeline
                                                  else GROUP_BASELINES)) if m not in exact]
    for name in (*exact, *names):
        get_method(name, options.plan_space)  # fail early on a typo
    runs = [_run(inst, m, options, exact=False) for m in names]
    warm = _best(runs)
    runs = [_run(inst, m, replace(options, warm_start=warm), exact=True) for m in exact] + runs
    reference, proven = _reference(inst, runs, options.objective)
    return Comparison(inst.name, options.objective, tuple(runs), reference, proven)


def _best(runs: Sequence[MethodRun]) -> Plan | None:
    with_plan = [r.result for r in runs if r.result.has_plan]
    return min(with_plan, key=lambda r: r.objective_s).plan if with_plan else None


def compare(inst: Instance, methods: Sequence[str] | None = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`run_comparison`'s table (:data:`COLUMNS`), exact reference first."""
    return run_comparison(inst, methods, **kwargs).frame()


