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
    dataparallel,
    even,
    exo,
    flexpie,
    greedy,
    grid2d,
    llamacpp,
    local,
    memory_first,
    neurosurgeon,
    onedim,
    pipeedge,
    random,
    seifer,
)
