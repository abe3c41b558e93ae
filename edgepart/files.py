"""Reading input files: a missing, unreadable or malformed file is one :class:`InputError` line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepart.errors import InputError

__all__ = ["read_json", "read_text"]


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
