"""Reading input files: a missing, unreadable or malformed file is one :class:`InputError` line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepart.errors import InputError

__all__ = ["read_json", "read_text", "write_json"]


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def write_json(data: Any, path: str | Path, option: str = "--out") -> None:
    """``data`` as compact, readable JSON (:func:`edgepart.profiling.jsonfmt.dumps`) at ``path``;
    a path that cannot be written is one :class:`InputError` line naming ``option``."""
    from edgepart.profiling.jsonfmt import dumps

    try:
        Path(path).write_text(dumps(data) + "\n")
    except OSError as err:
        raise InputError(f"{option}: cannot write {str(path)!r}: {err.strerror}") from None
