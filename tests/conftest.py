from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "instances" / "tiny"


@pytest.fixture
def two_layers() -> dict[str, Any]:
    """A fresh copy of instances/tiny/two_layers.json as a dict (safe to mutate)."""
    return copy.deepcopy(json.loads((TINY / "two_layers.json").read_text()))
