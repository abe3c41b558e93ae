"""What every method returns: a :class:`SolveResult` with the plan, its metrics and the proof.

Why a run stopped (:class:`Termination`) is kept apart from what it found (:class:`SolutionStatus`),
as in Pyomo's results. ``objective_s`` is always the shared evaluator's value for the plan, never a
solver's own number; ``bound_s`` is a proven lower bound (``0`` or ``-inf`` when none).
``status == OPTIMAL`` only when the bound proves it within :data:`OPTIMALITY_TOL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgepart.cost import Metrics
from edgepart.plan import Plan

__all__ = ["OPTIMALITY_TOL", "SolutionStatus", "SolveResult", "Termination", "relative_gap"]

OPTIMALITY_TOL = 1e-6
"""Relative gap under which a plan is called optimal: (objective - bound) / objective."""


class Termination(StrEnum):
    OPTIMAL = "optimal"  # search finished: the bound proves the incumbent (or infeasibility)
    INFEASIBLE = "infeasible"  # proven: no plan exists
    TIME_LIMIT = "time_limit"
    FINISHED = "finished"  # a heuristic ran to completion (proves nothing)
    UNSUPPORTED = "unsupported"  # the method does not apply to this instance (reason given)
    ERROR = "error"


class SolutionStatus(StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"  # proven
    NONE = "none"  # no plan found


def relative_gap(objective: float, bound: float) -> float:
    if not math.isfinite(objective):
        return math.inf
    if objective <= 0:
        return 0.0 if bound >= objective else math.inf
    return max(0.0, (objective - bound) / objective)


@dataclass(frozen=True)
class SolveResult:
    method: str
    termination: Termination
    status: SolutionStatus
    objective: str = "bottleneck"
    plan: Plan | None = None
    metrics: Metrics | None = None
    objective_s: float = math.inf
    bound_s: float = -math.inf
    wall_time_s: float = 0.0
    solver_version: str = ""
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return relative_gap(self.objective_s, self.bound_s)

    @property
    def has_plan(self) -> bool:
        return self.plan is not None and self.metrics is not None

    def to_dict(self, instance_name: str = "") -> dict[str, Any]:
        m = self.metrics
        return {
            "instance": instance_name or (self.plan.instance if self.plan else ""),
            "solver": self.method, "method": self.method, "objective": self.objective,
            "termination": self.termination.value, "status": self.status.value,
            "objective_value_s": self.objective_s if self.has_plan else None,
            "bound_s": self.bound_s, "gap": self.gap if self.has_plan else None,
            "solve_time_s": self.wall_time_s, "solver_version": self.solver_version,
            "message": self.message,
            "bottleneck_s": m.bottleneck_s if m else None,
            "latency_s": m.latency_s if m else None,
            "throughput_per_s": m.throughput_per_s if m else None,
            "stages": [s.to_dict() for s in m.stages] if m else [],
            **self.extra,
        }
