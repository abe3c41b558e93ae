"""Exceptions shared by the whole package.

Bad input (a malformed instance, an unknown solver name, a plan for another model) is an
:class:`InputError`; the CLI prints its one-line message and exits with code 2. A well-formed
problem that has no solution is not an exception: solvers return a ``SolveResult`` whose
termination says so (exit code 1).
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input. ``str(err)`` is a one-line message (several problems are joined with '; ')."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))
