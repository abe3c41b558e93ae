"""The shipped instance suite: every file is listed, loads, and the tight ones are tight."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from edgepart import load_instance, solve
from edgepart.solvers.base import SolveOptions

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = ROOT / "instances"
HYBRID = sorted(INSTANCES.glob("hybrid_*.json"))  # scripts/make_hybrid_instances.py makes these
SHIPPED = sorted(set(INSTANCES.glob("*.json")) - set(HYBRID))


def _script(name: str = "make_instances") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_instance_comes_from_the_script_and_is_documented() -> None:
    suite = _script().SUITE
    assert {p.stem for p in SHIPPED} == set(suite)
    readme = (INSTANCES / "README.md").read_text()
    for name in suite:
        assert f"`{name}`" in readme


def test_every_hybrid_instance_comes_from_its_script_and_is_documented() -> None:
    made = {path.stem for path in HYBRID}
    assert made and made == set(_script("make_hybrid_instances").CLUSTERS)
    readme = (INSTANCES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in made)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_instance_loads_and_matches_its_command(path: Path) -> None:
    model, cluster, _ = _script().SUITE[path.stem]
    inst = load_instance(path)
    assert inst.name == path.stem
    assert inst.meta["model_spec"] == model and inst.meta["cluster"]["name"] == cluster
    assert inst.source == inst.sink == inst.devices[0].id
    assert all(layer.nodes for layer in inst.model.layers)


@pytest.mark.parametrize("name", ["resnet50_8nodes_tight", "vgg16_4nodes_tight",
                                  "vit_b_16_8nodes_tight"])
def test_tight_instances_fit_on_few_devices_yet_have_a_plan(name: str) -> None:
    inst = load_instance(INSTANCES / f"{name}.json")
    weights = sum(layer.param_bytes for layer in inst.model.layers)
    fits = [d.id for d in inst.devices if d.memory_bytes >= weights]
    assert len(fits) < len(inst.devices) / 2
    result = solve(inst, "dp", SolveOptions(time_limit=60))
    assert result.plan is not None and len(result.plan.stages) >= 2
