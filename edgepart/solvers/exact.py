"""The one driver behind every exact backend: formulate once, warm-start, solve, decode, finish.

A backend (HiGHS, CBC, CP-SAT) only maps a :class:`LinearModel` to its solver and back; it never
sees layers. Two formulations feed it:

* ``stages`` (:mod:`edgepart.formulations.pipeline`): stage slots, every cost-model option; one
  model, solved once.
* ``paths`` (:mod:`edgepart.formulations.paths`): one path through cuts and device types; relay
  transfers or chains, graphs with few enough ideals. The latency objective is one model; the
  period is found by a *threshold search*: "is there a plan of period at most theta?" for theta just
  below the incumbent (usually the only question), then bisection over the finitely many values a
  period can take. An infeasible answer raises the proven bound to the next such value.

With ``lattice=True`` (the MILP backends and ``auto``) a period objective on relay transfers
without limits first goes to :func:`edgepart.cuts.period_search`, before either formulation
(unless the caller forced one): threshold questions answered by one sweep over the ideal lattice,
whose "no" is a bound that sees transfers (the stage-slot LP bound does not) and whose "yes" is a
better warm start; when the two meet, no solver is called (``backend`` ``lattice``), else its
bound floors the formulation's. Where that sweep is too large, a range search
(:func:`edgepart.cuts.range_search`, a restriction) looks for a better plan and a relaxed sweep
(:func:`edgepart.cuts.relaxed_search`, device counts relaxed) for a better bound. Every period
solve starts from the floor of :func:`edgepart.bounds.quick_bound` and
:func:`edgepart.bounds.envelope` (which sees that stages are contiguous and that a
boundary's message must fit the period; its witness, made a plan, competes with the warm start);
under formulation ``auto``, a warm start that meets that floor is optimal with no further search
(``backend`` ``bounds``).

The formulation ``auto`` picks what the backend does best (``paths`` for the MILP solvers, whose
bound on the stage-slot model stays at the trivial work/speed bound; ``stages`` for CP-SAT) and
falls back to ``stages`` where ``paths`` does not apply; the *method* ``auto``
(:mod:`edgepart.solvers.auto`) also picks the backend. Every decoded plan is re-evaluated by the
shared cost model; the result is optimal only when the proven bound meets that re-evaluated
objective. ``time_limit`` bounds the whole call (:func:`solve_exact`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from edgepart.bounds import device_prices, envelope, quick_bound
from edgepart.cost import evaluate, infeasibility_reasons, lower_bound, validate_plan
from edgepart.cuts import low_alive_order, period_search, range_search, relaxed_search
from edgepart.formulations.model import Deadline, LinearModel, OutOfTime
from edgepart.formulations.paths import Inapplicable, PathFormulation, PathModel
from edgepart.formulations.pipeline import PipelineFormulation
from edgepart.instance import Instance, Transfer
from edgepart.plan import Plan, Stage
from edgepart.results import OPTIMALITY_TOL, SolveResult, Termination, relative_gap
from edgepart.solvers.base import (
    Objective,
    SolveOptions,
    best_plan,
    finish,
    get_method,
    respects_limits,
)

__all__ = ["ENVELOPE_SHARE", "FINISH_SHARE", "LATTICE_SHARE", "SEARCH_TOL", "Backend",
           "BackendResult", "solve_exact"]

ENVELOPE_SHARE = 0.25
"""Share of the time left that :func:`edgepart.bounds.envelope`'s pass over the ideals
may take (it keeps the best bound proved by then)."""
FINISH_SHARE = 0.03
"""Share of the time limit kept for what follows the solve: freeing the formulation and
re-checking the plan took 1.5-2.2 s past a 60 s deadline on the 994-layer NASNet on 32 devices
(a 3-million-row stage-slot model), so formulating and solving stop at 97% of the limit."""
SEARCH_TOL = 1e-7
"""Candidate periods within this relative distance below the incumbent count as equal to it."""


@dataclass(frozen=True)
class BackendResult:
    values: list[float] | None
    termination: Termination
    bound_s: float
    version: str
    message: str = ""


Backend = Callable[[LinearModel, SolveOptions], BackendResult]


@dataclass
class _Outcome:
    """What a formulation's solve found, before the warm start and :func:`finish` are applied."""

    plan: Plan | None
    termination: Termination
    bound_s: float
    version: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def solve_exact(inst: Instance, options: SolveOptions, name: str,
                backend: Backend | Mapping[str, Backend], prefer: str = "stages",
                lattice: bool = False) -> SolveResult:
    """Solve ``inst`` exactly; ``prefer`` is the formulation under ``auto``. ``backend`` is one
    backend, or one per formulation (``{"paths": ..., "stages": ...}``). With ``lattice``, a
    period objective (relay transfers, no latency or period limit, formulation ``auto``) first
    runs :func:`edgepart.cuts.period_search` for at most
    :data:`LATTICE_SHARE` of the time left.

    ``options.time_limit`` bounds the whole call: the warm start gets :data:`WARM_START_SHARE` of
    it, building the formulation and the solver's model count against it (they stop at the
    deadline with :class:`OutOfTime`), each solve gets what is left, and the last
    :data:`FINISH_SHARE` of it is kept for the finish."""
    start = time.perf_counter()
    deadline = Deadline.after(None if options.time_limit is None
                              else options.time_limit * (1 - FINISH_SHARE))
    reasons = infeasibility_reasons(inst)
    if reasons:
        return finish(inst, None, method=name, options=options,
                      termination=Termination.INFEASIBLE, message="; ".join(reasons))
    warm = _warm_start(inst, options)
    warm_value = None if warm is None else _value(inst, warm, options)
    floor = quick_bound(inst, options.objective.value)
    if options.objective is Objective.BOTTLENECK:  # the envelope sees contiguity
        env = envelope(inst, upper=warm_value, lower=floor, deadline=Deadline.after(
            deadline.left() * ENVELOPE_SHARE))
        floor = max(floor, env.bound)
        better = best_plan(inst, [warm, env.plan], options)
        if better is not None and better is not warm:
            warm, warm_value = better, _value(inst, better, options)
        if options.formulation == "auto" and _meets(warm_value, floor):
            how = "its witness" if warm is env.plan else "the warm start"
            return _finish(inst, options, name, _proven_by(
                warm, floor, f"the envelope bound meets {how}",
                {"backend": "bounds", "formulation": "envelope"}), warm, warm_value, start)
    found: dict[str, Any] = {}
    if lattice and options.formulation == "auto" and _lattice_applies(inst, options):
        found_plan, bound, found = _lattice_search(inst, warm_value, floor, deadline)
        floor = max(floor, bound)
        found_value = None if found_plan is None else _value(inst, found_plan, options)
        if found_value is not None and (warm_value is None or found_value < warm_value):
            warm, warm_value = found_plan, found_value
        if _meets(warm_value, floor):
            return _finish(inst, options, name, _proven_by(
                warm, floor, "the lattice threshold search proved it",
                {"backend": "lattice", "formulation": "ideals", **found}), warm, warm_value, start)
    try:
        paths, why_not = _paths(inst, options, prefer, warm_value, deadline)
    except OutOfTime:
        return _finish(inst, options, name, _building_stopped("paths"), warm, warm_value, start)
    if paths is None and options.formulation == "paths":
        return finish(inst, None, method=name, options=options,
                      termination=Termination.UNSUPPORTED,
                      message=f"{name}: the path formulation does not apply: {why_not}")
    formulation = "paths" if paths is not None else "stages"
    chosen = backend[formulation] if isinstance(backend, Mapping) else backend
    run = partial(_call, chosen)
    try:
        if paths is not None:
            out = (_latency_paths(inst, options, paths, run, warm, deadline)
                   if options.objective is Objective.LATENCY
                   else _threshold_search(inst, options, paths, run, warm, floor, deadline))
        else:
            out = _solve_stages(inst, options, run, warm, warm_value, floor, deadline)
            if why_not:
                out.extra["paths_not_used"] = why_not
    except OutOfTime:
        out = _building_stopped(formulation)
    out.bound_s = max(out.bound_s, floor)
    out.extra.update(found)
    out.extra["backend"] = getattr(chosen, "__name__", "").removeprefix("run_")
    return _finish(inst, options, name, out, warm, warm_value, start)


def _meets(warm_value: float | None, floor: float) -> bool:
    """Whether the warm start is within the optimality tolerance of the proven floor."""
    return warm_value is not None and relative_gap(warm_value, floor) <= OPTIMALITY_TOL


def _proven_by(warm: Plan | None, floor: float, how: str, extra: dict[str, Any]) -> _Outcome:
    """The warm start, proven optimal by ``floor`` before any solver ran (``how``)."""
    return _Outcome(warm, Termination.OPTIMAL, floor, f"no solver call: {how}", extra=extra)


def _call(backend: Backend, model: LinearModel, options: SolveOptions) -> BackendResult:
    """``backend``; a model whose translation runs past the time limit is a time-limit stop."""
    try:
        return backend(model, options)
    except OutOfTime:
        return BackendResult(None, Termination.TIME_LIMIT, -math.inf, "",
                             "time limit reached while the solver's model was being built")


def _building_stopped(formulation: str) -> _Outcome:
    return _Outcome(None, Termination.TIME_LIMIT, -math.inf,
                    version="no solver call: the time limit came first", message=(
                        f"time limit reached while building the {formulation} formulation"),
                    extra={"formulation": formulation})


def _finish(inst: Instance, options: SolveOptions, name: str, out: _Outcome, warm: Plan | None,
            warm_value: float | None, start: float) -> SolveResult:
    plan, termination, message, bound = out.plan, out.termination, out.message, out.bound_s
    if warm is not None and warm_value is not None and (
            plan is None or _value(inst, plan, options) > warm_value):
        plan = warm
    if termination is Termination.INFEASIBLE and plan is not None:
        # the model was cut at the warm start's value: nothing beats it
        termination, bound = Termination.OPTIMAL, _value(inst, plan, options)
    elif termination is Termination.INFEASIBLE:
        message = "proven infeasible: no plan meets memory, device classes, colocation" + (
            " and the latency/period limits" if options.max_latency or options.max_period else "")
    elif plan is None and termination is Termination.TIME_LIMIT:
        message = f"no plan found within the time limit ({options.time_limit} s)"
    return finish(inst, plan, method=name, options=options, termination=termination,
                  bound=max(bound, lower_bound(inst, options.objective.value)),
                  wall_time_s=time.perf_counter() - start,
                  version=out.version or "no solver call: the formulation's pruning decided",
                  message=message, exact=True, extra=out.extra)


# -- stage slots ---------------------------------------------------------------------------


def _solve_stages(inst: Instance, options: SolveOptions, backend: Backend, warm: Plan | None,
                  warm_value: float | None, floor: float, deadline: Deadline) -> _Outcome:
    form = PipelineFormulation(inst, options.objective.value, options.max_latency,
                               options.max_period, upper_bound=warm_value, deadline=deadline)
    extra: dict[str, Any] = {"formulation": "stages", "variables": len(form.model.vars),
                             "constraints": len(form.model.constraints)}
    floor = max(floor, form.floor)
    if _meets(warm_value, floor):
        return _proven_by(None, floor, "the first-stages bound meets the warm start", extra)
    if warm is not None:
        _hint(form.model, form.hint(warm), options)
    res = backend(form.model, options.with_time_left(deadline))
    plan, res = _decoded(inst, res, form.decode, options)
    if plan is not None and res.bound_s > _value(inst, plan, options) * (1 + OPTIMALITY_TOL):
        # The backend's bound contradicts its own plan (seen with CP-SAT's presolve on
        # coefficients near 1e10): solve once more without presolve before giving up the proof.
        res = backend(form.model, replace(options.with_time_left(deadline),
                                          extra={**options.extra, "presolve": False}))
        plan, res = _decoded(inst, res, form.decode, options)
    return _Outcome(plan, res.termination, max(res.bound_s, floor), res.version, res.message,
                    extra)


FLOOR_FIRST_GAP = 0.05
"""The lattice search asks first just above the floor when the warm start is within this
relative gap of it (a 1,000-layer BERT and chain on 32 devices: 3.2% and 1.8%, proven in one
question; Inception-v3 on 8 devices: 21.5%, where that question was a "no" that cost 2 s)."""
LATTICE_SHARE = 0.5
"""Share of the time left that the lattice threshold search may use before the solver runs."""


def _lattice_search(inst: Instance, warm_value: float | None, floor: float, deadline: Deadline
                    ) -> tuple[Plan | None, float, dict[str, Any]]:
    """:func:`~edgepart.cuts.period_search` with :data:`LATTICE_SHARE` of the time left: its
    plan, its proven bound and what to report. Where it stops early (a wide DAG has too many
    ideals, many devices too many multisets) and time is left, the rest of that share goes to
    :func:`~edgepart.cuts.range_search` over the prefixes of
    :func:`~edgepart.cuts.low_alive_order`, for a better warm start (a restriction, so it proves
    nothing; NASNet-A, 994 layers on 32 devices: 6.87 ms against the local search's 7.25 ms, in
    11 s), then, where it refused for the device states (too many multisets per ideal), to
    :func:`~edgepart.cuts.relaxed_search` for a better bound (a relaxation; a 196-layer NASNet-A
    on 64 devices: proven, 18.16 ms, in one question). Where the ideals are too many the
    relaxation is not asked: there it bisected the whole share away from the backend that
    proves (a 196-layer NASNet-A on 8 devices: CP-SAT's 4.7 s became 32.6 s)."""
    share = Deadline.after(deadline.left() * LATTICE_SHARE)
    upper = math.inf if warm_value is None else warm_value
    search = period_search(inst, upper, floor, share,
                           floor_first=floor >= upper * (1 - FLOOR_FIRST_GAP))
    report: dict[str, Any] = {"questions": search.questions, "bound_s": search.bound,
                              "stopped": search.stopped}
    plan, bound = search.plan, max(floor, search.bound)
    if plan is None and search.stopped and share.left() > 0:
        plan = range_search(inst, low_alive_order(inst), upper, bound, share)
        report["range_plan_s"] = None if plan is None else evaluate(inst, plan).bottleneck_s
    prices = device_prices(inst) if search.device_states and share.left() > 0 else None
    if prices is not None:
        best = upper if plan is None else min(upper, evaluate(inst, plan).bottleneck_s)
        relaxed = relaxed_search(inst, prices, best, bound, share)
        report["relaxed"] = {"questions": relaxed.questions, "bound_s": relaxed.bound,
                             "stopped": relaxed.stopped}
        bound = max(bound, relaxed.bound)
        if relaxed.plan is not None:
            plan = relaxed.plan
    return plan, bound, {"lattice": report}


def _lattice_applies(inst: Instance, options: SolveOptions) -> bool:
    """The lattice search answers the period of single-device relay plans without limits."""
    return (options.objective is Objective.BOTTLENECK and options.max_latency is None
            and options.max_period is None and inst.cost_model.transfer is Transfer.RELAY)


# -- paths ---------------------------------------------------------------------------------


def _paths(inst: Instance, options: SolveOptions, prefer: str, warm_value: float | None,
           deadline: Deadline) -> tuple[PathFormulation | None, str]:
    """The path formulation when chosen and applicable, else ``None`` and why not."""
    if (options.formulation if options.formulation != "auto" else prefer) != "paths":
        return None, ""
    try:
        form = PathFormulation(inst, options.objective.value, options.max_latency, warm_value,
                               deadline)
    except Inapplicable as why:
        return None, str(why)
    if options.objective is Objective.BOTTLENECK and form.period_values is None:
        return None, "too many distinct stage times to search (no overlap, many device types)"
    return form, ""


def _latency_paths(inst: Instance, options: SolveOptions, form: PathFormulation,
                   backend: Backend, warm: Plan | None, deadline: Deadline) -> _Outcome:
    pm = form.model(options.max_period, user_limit=True)
    extra = {"formulation": "paths", "stage_arcs": form.size}
    if pm is None:  # no path within the limits (and better than the warm start)
        return _Outcome(None, Termination.INFEASIBLE, math.inf, extra=extra)
    if warm is not None:
        _hint(pm.model, form.hint(pm, warm), options)
    res = backend(pm.model, options.with_time_left(deadline))
    plan, res = _decoded(inst, res, partial(form.decode, pm), options)
    extra["variables"] = len(pm.model.vars)
    return _Outcome(plan, res.termination, res.bound_s, res.version, res.message, extra)


def _threshold_search(inst: Instance, options: SolveOptions, form: PathFormulation,
                      backend: Backend, best: Plan | None, floor: float, deadline: Deadline
                      ) -> _Outcome:
    """Minimise the period by feasibility questions (see the module docstring), none below the
    proven ``floor``."""
    values = form.period_values
    assert values is not None
    ub = math.inf if best is None else _value(inst, best, options)
    lo = floor
    out = _Outcome(best, Termination.OPTIMAL, lo, extra={
        "formulation": "paths", "stage_arcs": form.size, "candidate_periods": len(values),
        "feasibility_solves": 0})
    first = True
    while True:
        # Candidates are sums of cumulative times, so a plan's period may sit a rounding error
        # below the proven bound ``lo`` (found by the property tests: a lower bound of 1.379
        # hid the candidate 1.3789999999999998 and 1.893 was called optimal); keep them.
        floor = lo * (1 - SEARCH_TOL)
        open_ = values[(values >= floor) & (values < ub * (1 - SEARCH_TOL))]
        if not len(open_):
            above = values[values >= floor]
            out.bound_s = min(ub, float(above[0])) if len(above) else ub
            out.termination = Termination.OPTIMAL if best is not None else Termination.INFEASIBLE
            return out
        if deadline.left() <= 0:
            out.termination, out.message = Termination.TIME_LIMIT, (
                f"stopped at the time limit ({options.time_limit} s) of the period search")
            return out
        # first just below the incumbent (usually the proof), then bisection
        theta = float(open_[-1] if first else open_[len(open_) // 2])
        first = False
        pm = form.model(theta)
        res = None if pm is None else backend(pm.model, options.with_time_left(deadline))
        out.extra["feasibility_solves"] += res is not None
        if res is not None:
            out.version = res.version
        _log(options, theta, pm, res)
        if pm is None or res is None or res.termination is Termination.INFEASIBLE:
            nxt = np.searchsorted(values, theta, side="right")
            lo = float(values[nxt]) if nxt < len(values) else math.inf
            out.bound_s = max(out.bound_s, min(lo, ub))
            continue
        plan, res = _decoded(inst, res, partial(form.decode, pm), options)
        value = math.inf if plan is None else _value(inst, plan, options)
        if value >= ub * (1 - SEARCH_TOL):
            return _stopped(out, res, theta, ub)
        best, ub = plan, value
        out.plan = best


def _stopped(out: _Outcome, res: BackendResult, theta: float, ub: float) -> _Outcome:
    """The search ends without a proof: the backend stopped, or its plan was no better."""
    if res.termination is Termination.OPTIMAL:
        out.termination = Termination.ERROR
        out.message = (f"the solver reported a plan of period <= {theta:.9g} s but none "
                       f"decoded below the incumbent ({ub:.9g} s)")
    else:
        out.termination = res.termination
        out.message = res.message or (
            f"stopped at the time limit while asking for a period <= {theta * 1e3:.6f} ms")
    return out


def _log(options: SolveOptions, theta: float, pm: PathModel | None, res: BackendResult | None
         ) -> None:
    if not options.verbose:
        return
    answer = "no path survives pruning" if res is None else res.termination.value
    size = "" if pm is None else f" ({len(pm.stage_vars)} stage arcs)"
    print(f"edgepart: paths: period <= {theta * 1e3:.6f} ms{size}: {answer}", file=sys.stderr)


# -- shared --------------------------------------------------------------------------------


def _hint(model: LinearModel, values: dict[int, float], options: SolveOptions) -> None:
    why_not = model.set_hint(values)
    if why_not and options.verbose:
        print(f"edgepart: {why_not}", file=sys.stderr)


def _value(inst: Instance, plan: Plan, options: SolveOptions) -> float:
    return evaluate(inst, plan).objective(options.objective.value)


def _decoded(inst: Instance, res: BackendResult, decode: Callable[[list[float]], Plan | None],
             options: SolveOptions) -> tuple[Plan | None, BackendResult]:
    """The backend's plan, unless it has none, or the shared checker rejects it, or it breaks the
    caller's limits: such a plan is not trusted. The integer model is a relaxation (CP-SAT rounds
    toward feasible; MILP solvers accept rows and integrality within their tolerances), so a
    solution can miss a capacity or limit by a hair; its bound is still valid, but the backend's
    "optimal" is then no longer a verdict on a plan, and is turned into an error that says so."""
    if res.values is None:
        return None, res
    plan = decode(res.values)
    problems = ["its variables do not form a plan"] if plan is None else validate_plan(inst, plan)
    if plan is not None and not problems:
        m = evaluate(inst, plan)
        if respects_limits(m.latency_s, m.bottleneck_s, options):
            return plan, res
        problems = [f"it breaks --max-latency/--max-period (latency {m.latency_s:.9g} s, period "
                    f"{m.bottleneck_s:.9g} s)"]
    termination = Termination.ERROR if res.termination is Termination.OPTIMAL else res.termination
    return None, replace(res, termination=termination, values=None, message=(
        f"the solver's solution was rejected ({problems[0]}), within its tolerances or a "
        "rounding unit; its bound stands"))


WARM_START_METHODS = ("dp", "local")
"""Fast methods whose plans warm-start the exact backends (each answers ``None`` where it does
not apply); looked up with :func:`~edgepart.solvers.base.get_method`, which loads the built-in
methods, so a direct caller of :func:`solve_exact` gets the same warm start as ``solve``."""
WARM_START_SHARE = 0.2
"""Share of the caller's time limit that the warm-start methods may use, together."""


def _warm_start(inst: Instance, options: SolveOptions) -> Plan | None:
    """The best valid plan among the caller's, every single-device plan and the plans of
    :data:`WARM_START_METHODS` (or none)."""
    candidates = [options.warm_start] + [
        Plan((Stage(dev.id, tuple(x.id for x in inst.model.layers)),)) for dev in inst.devices]
    share = None if options.time_limit is None else (
        options.time_limit * WARM_START_SHARE / max(1, len(WARM_START_METHODS)))
    quick = replace(options, warm_start=None, verbose=False, time_limit=share)
    candidates += [get_method(name)(inst, quick).plan for name in WARM_START_METHODS]
    return best_plan(inst, candidates, options)
