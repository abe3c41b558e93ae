"""What every method shares: options, the registry by name, and :func:`finish`, the one place
where a plan becomes a :class:`SolveResult` (validated and re-evaluated by the shared cost model;
a method's own objective value is never trusted)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from edgepart.cost import evaluate, tolerated, validate_plan
from edgepart.errors import InputError
from edgepart.formulations.model import Deadline
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import (
    OPTIMALITY_TOL,
    SolutionStatus,
    SolveResult,
    Termination,
    relative_gap,
)

__all__ = [
    "FORMULATIONS", "GROUP_METHODS", "METHODS", "Objective", "PlanSpace", "SolveOptions",
    "best_plan", "finish", "get_method", "register", "solve",
]


FORMULATIONS = ("auto", "stages", "paths")
"""Models an exact backend may use (see :mod:`edgepart.solvers.exact`)."""


class Objective(StrEnum):
    BOTTLENECK = "bottleneck"
    LATENCY = "latency"


class PlanSpace(StrEnum):
    """Which plans a solve searches (``--plan-space``): stages on one device each (pipeline,
    today's plans), or stages that may also be device groups (see :mod:`edgepart.plan`)."""

    PIPELINE = "pipeline"
    REPLICATE = "replicate"  # single-device and replicated stages
    SPLIT = "split"  # single-device and split stages
    HYBRID = "hybrid"  # all three


GROUP_METHODS = ("groups", "brute", "flexpie", "onedim", "grid2d", "dataparallel")
"""Methods that search (or build) plans with device groups; ``auto`` means ``groups`` there."""


@dataclass(frozen=True)
class SolveOptions:
    objective: Objective = Objective.BOTTLENECK
    time_limit: float | None = None
    threads: int | None = None
    max_latency: float | None = None  # bound on latency when minimising the period
    max_period: float | None = None  # bound on the period when minimising latency
    warm_start: Plan | None = None
    verbose: bool = False
    seed: int = 0
    formulation: str = "auto"  # exact MILP/CP-SAT methods: auto, stages or paths
    extra: dict[str, Any] = field(default_factory=dict)
    plan_space: PlanSpace = PlanSpace.PIPELINE
    max_group: int | None = None  # most devices in one group (None: every device)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))
        if self.plan_space not in tuple(PlanSpace):
            raise InputError(f"plan_space: must be one of {', '.join(PlanSpace)}, "
                             f"got '{self.plan_space}'")
        object.__setattr__(self, "plan_space", PlanSpace(self.plan_space))
        if self.max_group is not None and self.max_group < 2:
            raise InputError(f"max_group: must be >= 2, got {self.max_group}")
        for name in ("time_limit", "max_latency", "max_period"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"{name}: must be a positive number, got {value}")
        if self.formulation not in FORMULATIONS:
            raise InputError(f"formulation: must be one of {', '.join(FORMULATIONS)}, "
                             f"got '{self.formulation}'")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads: must be >= 1, got {self.threads}")

    def with_time_left(self, deadline: Deadline) -> SolveOptions:
        """These options with ``time_limit`` cut to what is left before ``deadline`` (at least
        0.01 s), so that a limit bounds a whole call made of several steps; unchanged without a
        limit."""
        if self.time_limit is None:
            return self
        return replace(self, time_limit=max(0.01, deadline.left()))


Method = Callable[[Instance, SolveOptions], SolveResult]
METHODS: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
    """Decorator: make a method available by name (``edgepart solve --solver NAME``)."""

    def wrap(fn: Method) -> Method:
        METHODS[name] = fn
        return fn

    return wrap


def get_method(name: str, plan_space: PlanSpace | str = PlanSpace.PIPELINE) -> Method:
    """The method called ``name``; beyond pipeline plans ``auto`` is the exact ``groups`` DP and
    only :data:`GROUP_METHODS` are accepted."""
    _load_builtin_methods()
    if name not in METHODS:
        names = ", ".join(sorted(METHODS))
        raise InputError(f"solver: unknown method '{name}' (choose from {names})")
    if PlanSpace(plan_space) is PlanSpace.PIPELINE:
        return METHODS[name]
    if name == "auto":
        return METHODS["groups"]
    if name not in GROUP_METHODS:
        raise InputError(f"solver: {name} searches pipeline plans only; with --plan-space "
                         f"{PlanSpace(plan_space).value} use one of auto, "
                         + ", ".join(GROUP_METHODS))
    return METHODS[name]


def solve(inst: Instance, method: str = "auto", options: SolveOptions | None = None,
          **kwargs: Any) -> SolveResult:
    """Run one method by name. ``kwargs`` are :class:`SolveOptions` fields."""
    options = options or SolveOptions(**kwargs)
    return get_method(method, options.plan_space)(inst, options)


def _load_builtin_methods() -> None:
    import edgepart.solvers.registry  # noqa: F401  (registers every built-in method)


def respects_limits(metrics_latency: float, metrics_period: float, options: SolveOptions) -> bool:
    """Within ``--max-latency`` and ``--max-period``, up to the checker's tolerance."""
    if options.max_latency is not None and metrics_latency > tolerated(options.max_latency):
        return False
    return not (options.max_period is not None and metrics_period > tolerated(options.max_period))


def best_plan(inst: Instance, plans: Iterable[Plan | None], options: SolveOptions
              ) -> Plan | None:
    """The valid plan (within the caller's limits) with the smallest objective, or ``None``."""
    best: tuple[float, Plan] | None = None
    for plan in plans:
        if plan is None or validate_plan(inst, plan):
            continue
        m = evaluate(inst, plan)
        value = m.objective(options.objective.value)
        if respects_limits(m.latency_s, m.bottleneck_s, options) and (
                best is None or value < best[0]):
            best = (value, plan)
    return None if best is None else best[1]


def finish(inst: Instance, plan: Plan | None, *, method: str, options: SolveOptions,
           termination: Termination, bound: float = -math.inf, wall_time_s: float = 0.0,
           version: str = "", message: str = "", exact: bool = False,
           extra: dict[str, Any] | None = None) -> SolveResult:
    """Validate and evaluate ``plan`` and package it.

    ``exact`` marks methods whose ``bound`` is a proof (exact solvers, exact DP): the result is
    called optimal only when the re-evaluated objective meets that bound within
    :data:`OPTIMALITY_TOL`. A proven-infeasible run passes ``plan=None`` and
    ``termination=INFEASIBLE``.
    """
    common: dict[str, Any] = {
        "method": method, "objective": options.objective.value, "bound_s": bound,
        "wall_time_s": wall_time_s, "solver_version": version, "extra": extra or {}}
    if plan is None:
        status = (SolutionStatus.INFEASIBLE if termination is Termination.INFEASIBLE
                  else SolutionStatus.NONE)
        return SolveResult(termination=termination, status=status, message=message, **common)
    plan = Plan(plan.stages, inst.name, method, plan.meta)
    problems = validate_plan(inst, plan)
    if problems:
        return SolveResult(termination=Termination.ERROR, status=SolutionStatus.NONE,
                           message=f"{method} produced an invalid plan: {problems[0]}", **common)
    metrics = evaluate(inst, plan)
    if not respects_limits(metrics.latency_s, metrics.bottleneck_s, options):
        return SolveResult(termination=termination, status=SolutionStatus.NONE,
                           message=message or "plan breaks --max-latency/--max-period", **common)
    value = metrics.objective(options.objective.value)
    proven = exact and relative_gap(value, bound) <= OPTIMALITY_TOL
    if exact and value < bound <= value * (1 + OPTIMALITY_TOL) + 1e-12:
        common["bound_s"] = value  # a solver's tolerance above a real plan: the plan is the bound
    elif exact and bound > value * (1 + OPTIMALITY_TOL) + 1e-12:
        message = (message + "; " if message else "") + (
            f"bound {bound:.9g} exceeds the evaluated objective {value:.9g}: bound discarded")
        common["bound_s"] = -math.inf
        proven = False
    return SolveResult(termination=termination,
                       status=SolutionStatus.OPTIMAL if proven else SolutionStatus.FEASIBLE,
                       plan=plan, metrics=metrics, objective_s=value, message=message, **common)
