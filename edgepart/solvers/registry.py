"""Imports every built-in method so that it registers itself by name (see ``base.register``)."""

from __future__ import annotations

from edgepart.solvers import brute  # noqa: F401
from edgepart.solvers import cbc, cpsat, highs  # noqa: F401
from edgepart.solvers import dp  # noqa: F401
from edgepart.solvers.heuristics import (  # noqa: F401
    amp4ec, even, greedy, local, neurosurgeon, pipeedge, random, seifer)
