"""Methods by name: exact backends (``cpsat``, ``highs``, ``cbc``), ``brute`` force, exact DP and
heuristics. Every one returns a :class:`edgepart.results.SolveResult`."""

from __future__ import annotations

from edgepart.solvers.base import METHODS, Objective, SolveOptions, finish, get_method, solve

__all__ = ["METHODS", "Objective", "SolveOptions", "finish", "get_method", "solve"]
