"""Heuristic partitioners: the seed papers' algorithms, field baselines and our own ``local``.

Each method lives in its own module, cites its source, states what it models and what it
ignores, registers itself by name and returns through :func:`edgepart.solvers.base.finish`, so
every plan is validated and scored by the one cost model. Shared pieces are in ``common``.
"""
