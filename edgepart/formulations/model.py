"""A solver-neutral mixed-integer linear model: what a formulation builds and a backend reads.

Variables are Boolean or non-negative numbers with a finite upper bound and a *dimension*
(``time`` in seconds, ``bytes``, ``count``). Constraints are ``sum(coef * var) + const >= 0``,
optionally *enforced* only when a set of Boolean literals are all true. Each constraint says how
it may be rounded when a backend needs integer coefficients (CP-SAT):

* ``RELAX``: rounding may only make it easier to satisfy. Every row with a real coefficient is of
  this kind (time lower bounds, capacities and user limits alike), so the integer model is a
  *relaxation* of the real one: its optimum is a valid lower bound and its "infeasible" a proof.
  A plan decoded from it may break a capacity or a limit by a rounding unit; the shared checker
  (:func:`edgepart.cost.validate_plan`) rejects such a plan, so it is never reported.
* ``EXACT``: integer coefficients only (assignment, precedence, logic).

Why rounding every coefficient and the constant *up* in ``sum(c * x) + k >= 0`` is a relaxation:
map each real solution to the integer one with Booleans unchanged and every number (time, bytes)
rounded down to a whole unit. Booleans and numbers are non-negative, ``ceil(c) x >= c x``, and
every row has at most one number with a positive coefficient (+1: the quantity being bounded below,
e.g. the period), so ``floor(a) >= floor(sum of the rest) >= sum of their floors + floor(rest)``;
the bound ``ub`` becomes ``ceil(ub)``. Rows with a number of coefficient -1 (a user limit
``L <= max``) hold since ``floor(L) <= floor(max) <= ceil(max)``.

A MILP backend turns enforcement into a big-M term, computing M from the variable bounds; CP-SAT
uses ``only_enforce_if``. The backends never see layers or devices, only this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["NO_DEADLINE", "Constraint", "Deadline", "Dim", "LinearModel", "OutOfTime", "Rounding",
           "Terms", "Var"]

Terms = list[tuple[float, int]]
"""A linear expression without constant: (coefficient, variable index) pairs."""


class OutOfTime(Exception):
    """Building or translating a model ran past its deadline (a time-limit stop, not an error)."""


@dataclass(frozen=True)
class Deadline:
    """A point on ``time.perf_counter()``'s clock (``inf``: none). Model builders call
    :meth:`check` in their long loops so that a time limit bounds building too."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(math.inf if seconds is None else time.perf_counter() + seconds)

    def left(self) -> float:
        return self.at - time.perf_counter()

    def check(self) -> None:
        if time.perf_counter() > self.at:
            raise OutOfTime

    def check_every(self, step: int, every: int = 20_000) -> None:
        """:meth:`check` at every ``every``-th step of a long loop (a look at the clock costs
        more than translating one row)."""
        if step % every == 0:
            self.check()


NO_DEADLINE = Deadline()


class Dim(StrEnum):
    TIME = "time"
    BYTES = "bytes"
    COUNT = "count"


class Rounding(StrEnum):
    RELAX = "relax"
    EXACT = "exact"  # integer coefficients only (assignment, precedence, logic)


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    boolean: bool
    ub: float
    dim: Dim = Dim.COUNT


@dataclass(frozen=True, slots=True)
class Constraint:
    terms: Terms
    const: float
    dim: Dim
    rounding: Rounding
    enforce: tuple[int, ...] = ()
    name: str = ""


@dataclass
class LinearModel:
    """Variables, constraints ``terms + const >= 0`` and one variable to minimise."""

    vars: list[Var] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    objective: int = -1
    hint: dict[int, float] = field(default_factory=dict)
    time_scale: float = 0.0
    """The largest time any expression reaches, when no time variable's bound says it (backends
    choose their time unit from it)."""
    presolve: bool = True
    """Whether MILP backends should presolve it. The path models are answered faster without:
    HiGHS spent 1.9 of 2.0 s presolving a 500-row threshold question on VGG-16, and on the shipped
    instances every path solve was 1.5-15x faster with presolve off (stage-slot models were mixed:
    GNMT's period 1.7 s with presolve, 19 s without)."""

    def boolean(self, name: str) -> int:
        self.vars.append(Var(name, True, 1.0))
        return len(self.vars) - 1

    def number(self, name: str, ub: float, dim: Dim) -> int:
        self.vars.append(Var(name, False, max(ub, 0.0), dim))
        return len(self.vars) - 1

    def ge(self, terms: Terms, const: float = 0.0, *, dim: Dim = Dim.COUNT,
           rounding: Rounding = Rounding.EXACT, enforce: tuple[int, ...] = (),
           name: str = "") -> None:
        """Add ``sum(terms) + const >= 0`` (only when every ``enforce`` literal is 1)."""
        self.constraints.append(Constraint(terms, const, dim, rounding, enforce, name))

    def le(self, terms: Terms, const: float = 0.0, *, dim: Dim = Dim.COUNT,
           rounding: Rounding = Rounding.EXACT, enforce: tuple[int, ...] = ()) -> None:
        """Add ``sum(terms) + const <= 0``."""
        self.ge([(-c, v) for c, v in terms], -const, dim=dim, rounding=rounding, enforce=enforce)

    def eq(self, terms: Terms, const: float = 0.0) -> None:
        """Add ``sum(terms) + const == 0`` (integer coefficients)."""
        self.ge(terms, const)
        self.le(terms, const)

    def time_ge(self, terms: Terms, const: float = 0.0, enforce: tuple[int, ...] = ()) -> None:
        """A lower bound on a time quantity: may be relaxed by rounding."""
        self.ge(terms, const, dim=Dim.TIME, rounding=Rounding.RELAX, enforce=enforce)

    def capacity_le(self, terms: Terms, const: float, dim: Dim,
                    enforce: tuple[int, ...] = ()) -> None:
        """A capacity or a user limit (``terms + const <= 0``); rounded toward feasible like every
        row, so that the integer model stays a relaxation (the plan is checked afterwards)."""
        self.le(terms, const, dim=dim, rounding=Rounding.RELAX, enforce=enforce)

    def set_hint(self, values: dict[int, float]) -> str:
        """Use ``values`` as the warm start when every one lies within its variable's bounds;
        otherwise use none and say which value does not fit (a backend must never be handed a
        start outside its own bounds)."""
        self.hint = {}
        for i, value in values.items():
            var = self.vars[i]
            if not 0.0 <= value <= var.ub * (1 + 1e-9) + 1e-12:
                return (f"warm start dropped: {var.name} = {value:.9g} is outside "
                        f"[0, {var.ub:.9g}]")
        self.hint = dict(values)
        return ""

    def violations(self, values: Mapping[int, float], tol: float = 1e-9) -> list[str]:
        """What a complete assignment breaks, in real arithmetic (no rounding): a variable with no
        value, outside ``[0, ub (1 + tol)]`` or a Boolean not 0 or 1, and each row whose
        enforcing literals are all 1 and whose ``terms + const`` is below ``-tol`` times its size
        (the sum of the magnitudes of its terms and constant: a float sum of n terms errs by
        about n * 2.2e-16 of that). Empty when ``values`` is a solution."""
        out = [f"{var.name}: {values.get(i)} outside [0, {var.ub:.9g}]"
               for i, var in enumerate(self.vars)
               if not 0.0 <= values.get(i, math.nan) <= var.ub * (1 + tol)
               or (var.boolean and values[i] not in (0.0, 1.0))]
        for k, con in enumerate(self.constraints):
            if all(values.get(lit) == 1.0 for lit in con.enforce):
                parts = [c * values.get(i, math.nan) for c, i in con.terms]
                total = sum(parts) + con.const
                if not total >= -tol * (sum(map(abs, parts)) + abs(con.const)):
                    first = self.vars[con.terms[0][1]].name if con.terms else "constant"
                    out.append(f"row {k} ({con.name or 'first term ' + first}): {total:.9g} < 0")
        return out

    def max_coef(self, dim: Dim) -> float:
        """Largest |value| any ``dim`` expression can reach (used to choose integer units)."""
        own = self.time_scale if dim is Dim.TIME else 0.0
        return max([own, *(v.ub for v in self.vars if v.dim is dim)]) or 1.0
