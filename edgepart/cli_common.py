"""Conventions every CLI module follows (argument parsing and printing only).

Each area (``edgepart.cli`` for the core, ``edgepart.profiling.cli``, ``edgepart.interop.cli``,
``edgepart.runtime.cli``, ...) exposes ``register(subparsers)`` that adds its sub-commands; each
sub-command sets ``handler=function(args) -> int`` (the exit code) with ``set_defaults``.
Handlers raise :class:`edgepart.errors.InputError` for bad input; the top-level ``main`` turns it
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["EXIT_BAD_INPUT", "EXIT_NO_PLAN", "EXIT_OK", "print_json"]

EXIT_OK = 0
EXIT_NO_PLAN = 1
EXIT_BAD_INPUT = 2


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (NaN/inf become null)."""
    json.dump(_finite(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
