"""Stable, compact, diff-friendly JSON for instances and clusters.

Objects are expanded one key per line; an array that holds objects or arrays is expanded one
element per line, each element written on a single line (a layer, an edge, a matrix row). Other
arrays and scalars stay inline. Key order is kept, so the writer controls it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def dumps(obj: Any, indent: int = 0) -> str:
    """``obj`` as JSON text in the layout described in the module docstring."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        items = [pad + json.dumps(x) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(obj)
