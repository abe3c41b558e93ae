"""Imports every built-in method so that it registers itself by name (see ``base.register``)."""

from __future__ import annotations

from edgepart.solvers import (  # noqa: F401
    auto,
    brute,
    cbc,
    cpsat,
    dp,
    groups,
    highs,
)
from edgepart.solvers.heuristics import (  # noqa: F401
    amp4ec,
    even,
    exo,
    greedy,
    llamacpp,
    local,
    memory_first,
    neurosurgeon,
    pipeedge,
    random,
    seifer,
)
