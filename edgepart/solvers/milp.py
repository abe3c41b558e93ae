"""Shared by the MILP backends (HiGHS, CBC): a :class:`LinearModel` scaled for a MILP solver.

Times are expressed in units of ``horizon / 1000`` and bytes in units of ``largest bytes / 1000``
so that solver tolerances (1e-6 absolute on rows) stay far below the optimality tolerance.
Enforced constraints become big-M rows, with M computed from the variable bounds.
:func:`scaled` does this once for both backends; :func:`to_pulp` writes the result as a
``pulp.LpProblem`` (CBC), :mod:`edgepart.solvers.highs` hands it to highspy as arrays.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pulp

from edgepart.formulations.model import NO_DEADLINE, Constraint, Deadline, Dim, LinearModel

__all__ = ["PulpModel", "ScaledModel", "scaled", "solver_output", "to_pulp"]

STEPS = 1000.0


@dataclass(frozen=True)
class ScaledModel:
    """Variable ``i`` is ``scale[i]`` times the solver's; rows are ``sum(coef * x) >= lower``
    in solver units, ``rows[k] = (coefficients by variable, lower)``."""

    scale: list[float]
    ub: list[float]
    boolean: list[bool]
    rows: list[tuple[dict[int, float], float]]
    objective: int

    def values(self, solver_values: list[float]) -> list[float]:
        return [v * s for v, s in zip(solver_values, self.scale, strict=True)]

    def start(self, hint: dict[int, float]) -> dict[int, float]:
        """The start values in solver units (already checked against the bounds by
        :meth:`LinearModel.set_hint`), clamped into them against rounding in the unit change."""
        return {i: min(max(value / self.scale[i], 0.0), self.ub[i]) for i, value in hint.items()}


def scaled(model: LinearModel, deadline: Deadline = NO_DEADLINE) -> ScaledModel:
    """``model`` in solver units; raises :class:`OutOfTime` past ``deadline``."""
    units = {Dim.TIME: model.max_coef(Dim.TIME) / STEPS,
             Dim.BYTES: max(model.max_coef(Dim.BYTES), 1.0) / STEPS, Dim.COUNT: 1.0}
    scale = [1.0 if v.boolean else units[v.dim] for v in model.vars]
    ub = [v.ub / s for v, s in zip(model.vars, scale, strict=True)]
    rows = []
    for k, con in enumerate(model.constraints):
        deadline.check_every(k)
        rows.append(_row(con, scale, ub, units[con.dim]))
    return ScaledModel(scale, ub, [v.boolean for v in model.vars], rows, model.objective)


def _row(con: Constraint, scale: list[float], ub: list[float], unit: float
         ) -> tuple[dict[int, float], float]:
    coefs: dict[int, float] = {}
    for c, i in con.terms:
        coefs[i] = coefs.get(i, 0.0) + c * scale[i] / unit
    const = con.const / unit
    if con.enforce:
        lo = const + sum(min(0.0, c * ub[i]) for i, c in coefs.items())
        big_m = max(0.0, -lo)
        for lit in con.enforce:
            coefs[lit] = coefs.get(lit, 0.0) - big_m
        const += big_m * len(con.enforce)
    return {i: c for i, c in coefs.items() if c != 0.0}, -const


@dataclass
class PulpModel:
    problem: pulp.LpProblem
    vars: list[pulp.LpVariable]
    model: ScaledModel

    def values(self) -> list[float]:
        return self.model.values([v.varValue or 0.0 for v in self.vars])


def to_pulp(model: LinearModel, name: str = "edgepart", deadline: Deadline = NO_DEADLINE
            ) -> PulpModel:
    """The model in PuLP's terms; raises :class:`OutOfTime` past ``deadline``."""
    sm = scaled(model, deadline)
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    pvars = [pulp.LpVariable(f"v{i}", lowBound=0, upBound=ub,
                             cat=pulp.LpBinary if boolean else pulp.LpContinuous)
             for i, (ub, boolean) in enumerate(zip(sm.ub, sm.boolean, strict=True))]
    for k, (coefs, lower) in enumerate(sm.rows):
        deadline.check_every(k)
        expr = pulp.LpAffineExpression([(pvars[i], c) for i, c in coefs.items()])
        prob.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintGE, rhs=lower), name=f"c{k}")
    prob.setObjective(pulp.LpAffineExpression([(pvars[sm.objective], 1.0)]))
    return PulpModel(prob, pvars, sm)


@contextmanager
def solver_output(verbose: bool) -> Iterator[None]:
    """Send what native solvers print on stdout to stderr (``verbose``) or nowhere, so that
    stdout carries only edgepart's own output (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = os.dup(2) if verbose else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)
