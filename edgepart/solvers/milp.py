"""Shared by the PuLP backends (HiGHS, CBC): a :class:`LinearModel` as a ``pulp.LpProblem``.

Times are expressed in units of ``horizon / 1000`` and bytes in units of ``largest bytes / 1000``
so that solver tolerances (1e-6 absolute on rows) stay far below the optimality tolerance.
Enforced constraints become big-M rows, with M computed from the variable bounds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pulp

from edgepart.formulations.model import Constraint, Deadline, Dim, LinearModel

__all__ = ["PulpModel", "solver_output", "to_pulp"]

STEPS = 1000.0


@dataclass
class PulpModel:
    problem: pulp.LpProblem
    vars: list[pulp.LpVariable]
    scale: list[float]  # value of variable i = scale[i] * solver value

    def values(self) -> list[float]:
        return [(v.varValue or 0.0) * s for v, s in zip(self.vars, self.scale, strict=True)]

    def set_hint(self, hint: dict[int, float]) -> None:
        """The start values (already checked against the bounds by
        :meth:`LinearModel.set_hint`), clamped into them against rounding in the unit change."""
        for i, value in hint.items():
            var = self.vars[i]
            var.setInitialValue(min(max(value / self.scale[i], 0.0), var.upBound))


CHECK_EVERY = 20_000
"""Constraints translated between two looks at the clock."""


def to_pulp(model: LinearModel, name: str = "edgepart", deadline: Deadline | None = None
            ) -> PulpModel:
    """The model in PuLP's terms; raises :class:`OutOfTime` past ``deadline``."""
    units = {Dim.TIME: model.max_coef(Dim.TIME) / STEPS,
             Dim.BYTES: max(model.max_coef(Dim.BYTES), 1.0) / STEPS, Dim.COUNT: 1.0}
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    pvars, scale = [], []
    for i, v in enumerate(model.vars):
        s = 1.0 if v.boolean else units[v.dim]
        cat = pulp.LpBinary if v.boolean else pulp.LpContinuous
        pvars.append(pulp.LpVariable(f"v{i}", lowBound=0, upBound=v.ub / s, cat=cat))
        scale.append(s)
    for k, con in enumerate(model.constraints):
        if deadline is not None and k % CHECK_EVERY == 0:
            deadline.check()
        prob.addConstraint(_row(model, con, pvars, scale, units[con.dim]), name=f"c{k}")
    prob.setObjective(pulp.LpAffineExpression([(pvars[model.objective], 1.0)]))
    return PulpModel(prob, pvars, scale)


def _row(model: LinearModel, con: Constraint, pvars: list[pulp.LpVariable], scale: list[float],
         unit: float) -> pulp.LpConstraint:
    coefs: dict[int, float] = {}
    for c, i in con.terms:
        coefs[i] = coefs.get(i, 0.0) + c * scale[i] / unit
    const = con.const / unit
    if con.enforce:
        lo = const + sum(min(0.0, c * model.vars[i].ub / scale[i]) for i, c in coefs.items())
        big_m = max(0.0, -lo)
        for lit in con.enforce:
            coefs[lit] = coefs.get(lit, 0.0) - big_m
        const += big_m * len(con.enforce)
    expr = pulp.LpAffineExpression([(pvars[i], c) for i, c in coefs.items() if c != 0.0])
    return pulp.LpConstraint(expr, pulp.LpConstraintGE, rhs=-const)


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
