"""The shipped JSON Schema agrees with the loader on every shipped instance and on bad input."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edgepart import InputError, load_instance

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTANCES = {"clusters", "plans"}  # cluster descriptions; the suite's proven plans
FILES = sorted(p for p in (ROOT / "instances").rglob("*.json")
               if not NOT_INSTANCES & set(p.parts) and p.name != "manifest.json"
               and not p.name.endswith(".optimum.json"))
SCHEMA = json.loads(resources.files("edgepart").joinpath("instance.schema.json").read_text())


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_shipped_instance_matches_schema_and_loads(path: Path) -> None:
    data = json.loads(path.read_text())
    jsonschema.validate(data, SCHEMA)
    load_instance(data)


@pytest.mark.parametrize("change", [
    lambda d: d["model"]["layers"][0].update(flops=-1),
    lambda d: d["devices"][0].update(memory_bytes=0),
    lambda d: d.update(cost_model={"transfer": "teleport"}),
    lambda d: d["model"]["layers"][0].pop("op"),
    lambda d: d.update(links={"pairs": []}),
])
def test_schema_and_loader_both_reject(two_layers: dict[str, Any], change: Any) -> None:
    change(two_layers)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(two_layers, SCHEMA)
    with pytest.raises(InputError):
        load_instance(two_layers)
