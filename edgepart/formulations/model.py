"""A solver-neutral mixed-integer linear model: what a formulation builds and a backend reads.

Variables are Boolean or non-negative numbers with a finite upper bound and a *dimension*
(``time`` in seconds, ``bytes``, ``count``). Constraints are ``sum(coef * var) + const >= 0``,
optionally *enforced* only when a set of Boolean literals are all true. Each constraint says which
way it may be rounded when a backend needs integer coefficients (CP-SAT):

* ``RELAX``: rounding may only make it easier (used for every "time >= ..." lower bound, so the
  integer model's optimum is a valid lower bound for the real one);
* ``TIGHTEN``: rounding may only make it harder (capacities and user limits, so an integer
  solution never breaks them).

A MILP backend turns enforcement into a big-M term, computing M from the variable bounds; CP-SAT
uses ``only_enforce_if``. The backends never see layers or devices, only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Constraint", "Dim", "LinearModel", "Rounding", "Terms", "Var"]

Terms = list[tuple[float, int]]
"""A linear expression without constant: (coefficient, variable index) pairs."""


class Dim(StrEnum):
    TIME = "time"
    BYTES = "bytes"
    COUNT = "count"


class Rounding(StrEnum):
    RELAX = "relax"
    TIGHTEN = "tighten"
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
        """A capacity or a user limit (``terms + const <= 0``): may only be tightened."""
        self.le(terms, const, dim=dim, rounding=Rounding.TIGHTEN, enforce=enforce)

    def max_coef(self, dim: Dim) -> float:
        """Largest |value| any ``dim`` expression can reach (used to choose integer units)."""
        own = self.time_scale if dim is Dim.TIME else 0.0
        return max([own, *(v.ub for v in self.vars if v.dim is dim)]) or 1.0
