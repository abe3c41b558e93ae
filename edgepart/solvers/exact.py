"""The one driver behind every exact backend: formulate once, warm-start, solve, decode, finish.

A backend (HiGHS, CBC, CP-SAT) only maps a :class:`LinearModel` to its solver and back; it never
sees layers. The decoded plan is re-evaluated by the shared cost model; the result is optimal
only when the backend's proven bound meets that re-evaluated objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from edgepart.cost import evaluate, infeasibility_reasons, lower_bound, validate_plan
from edgepart.formulations.model import LinearModel
from edgepart.formulations.pipeline import PipelineFormulation
from edgepart.instance import Instance
from edgepart.plan import Plan, Stage
from edgepart.results import OPTIMALITY_TOL, SolveResult, Termination
from edgepart.solvers.base import METHODS, SolveOptions, best_plan, finish

__all__ = ["Backend", "BackendResult", "solve_exact"]


@dataclass(frozen=True)
class BackendResult:
    values: list[float] | None
    termination: Termination
    bound_s: float
    version: str
    message: str = ""


Backend = Callable[[LinearModel, SolveOptions], BackendResult]


def solve_exact(inst: Instance, options: SolveOptions, name: str, backend: Backend) -> SolveResult:
    start = time.perf_counter()
    reasons = infeasibility_reasons(inst)
    if reasons:
        return finish(inst, None, method=name, options=options,
                      termination=Termination.INFEASIBLE, message="; ".join(reasons))
    warm = _warm_start(inst, options)
    warm_value = None if warm is None else _value(inst, warm, options)
    form = PipelineFormulation(inst, options.objective.value, options.max_latency,
                               options.max_period, upper_bound=warm_value)
    if warm is not None:
        form.model.hint = form.hint(warm)
    res = backend(form.model, _remaining(options, start))
    plan = _decoded(inst, form, res)
    if plan is not None and res.bound_s > _value(inst, plan, options) * (1 + OPTIMALITY_TOL):
        # The backend's bound contradicts its own plan (seen with CP-SAT's presolve on
        # coefficients near 1e10): solve once more without presolve before giving up the proof.
        res = backend(form.model, replace(_remaining(options, start),
                                          extra={**options.extra, "presolve": False}))
        plan = _decoded(inst, form, res)
    if warm is not None and warm_value is not None and (
            plan is None or _value(inst, plan, options) > warm_value):
        plan = warm
    termination, message = res.termination, res.message
    if termination is Termination.INFEASIBLE and plan is not None:
        termination = Termination.OPTIMAL  # nothing beats the warm start (cut at its value)
    elif termination is Termination.INFEASIBLE:
        message = "proven infeasible: no plan meets memory, device classes, colocation" + (
            " and the latency/period limits" if options.max_latency or options.max_period else "")
    elif plan is None and termination is Termination.TIME_LIMIT:
        message = f"no plan found within the time limit ({options.time_limit} s)"
    return finish(inst, plan, method=name, options=options, termination=termination,
                  bound=max(res.bound_s, lower_bound(inst, options.objective.value)),
                  wall_time_s=time.perf_counter() - start,
                  version=res.version, message=message, exact=True,
                  extra={"variables": len(form.model.vars),
                         "constraints": len(form.model.constraints)})


def _value(inst: Instance, plan: Plan, options: SolveOptions) -> float:
    return evaluate(inst, plan).objective(options.objective.value)


def _remaining(options: SolveOptions, start: float) -> SolveOptions:
    if options.time_limit is None:
        return options
    return replace(options, time_limit=max(0.1, options.time_limit - (time.perf_counter() - start)))


def _decoded(inst: Instance, form: PipelineFormulation, res: BackendResult) -> Plan | None:
    """The backend's plan, unless the shared checker rejects it (then it is not trusted)."""
    if res.values is None:
        return None
    plan = form.decode(res.values)
    return None if validate_plan(inst, plan) else plan


WARM_START_METHODS = ("dp", "local")
"""Fast methods whose plans warm-start the exact backends (when registered and applicable)."""


def _warm_start(inst: Instance, options: SolveOptions) -> Plan | None:
    """The best valid plan among the caller's, every single-device plan and the plans of
    :data:`WARM_START_METHODS` (or none)."""
    candidates = [options.warm_start] + [
        Plan((Stage(dev.id, tuple(x.id for x in inst.model.layers)),)) for dev in inst.devices]
    quick = replace(options, warm_start=None, verbose=False)
    candidates += [METHODS[name](inst, quick).plan for name in WARM_START_METHODS
                   if name in METHODS]
    return best_plan(inst, candidates, options)
