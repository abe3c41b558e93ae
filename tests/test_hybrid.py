"""Hybrid plans on the shipped instances (issue 11's done-when checks), the device-group
baselines, ``compare --plan-space`` and the split shapes recorded at profiling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepart.cli import main
from edgepart.cost import validate_plan
from edgepart.instance import load_instance
from edgepart.plan import Mode
from edgepart.results import SolutionStatus
from edgepart.solvers.base import SolveOptions, solve
from tests.test_groups import tiny

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "instances").glob("*.json"))
BASELINES = ("flexpie", "onedim", "grid2d", "dataparallel")


# The pipeline optima of the shipped instances (proven by `edgepart solve INSTANCE --objective
# OBJ --json`, auto: dp_ideals, HiGHS or CP-SAT, status optimal, 30 s limit), as
# (bottleneck, latency) seconds; instances/tiny carry theirs, derived by hand, in *.optimum.json.
PIPELINE_OPTIMA = {
    "hybrid_alexnet_4eq": (0.0160337, 0.0537329716),
    "hybrid_replicate_vgg16": (0.12895056, 0.21056737873),
    "hybrid_vgg16_4eq": (0.170881211, 0.6599739082),
    "inception_v3_8nodes": (0.03386, 0.0978949634867),
    "mobilenet_v2_4nodes": (0.005316896, 0.01399184529),
    "resnet50_16nodes": (0.006922528, 0.01522946256),
    "resnet50_20nodes_wireless": (0.1953617639, 0.1963541402),
    "resnet50_8nodes": (0.013345056, 0.04312827129),
    "resnet50_8nodes_tight": (0.013345056, 0.04822770532),
    "vgg16_4nodes": (0.0817020724, 0.16692731473),
    "vgg16_4nodes_tight": (0.64091488, 2.001611448),
    "vit_b_16_8nodes": (0.0384496844, 0.14534200365),
    "vit_b_16_8nodes_tight": (0.0449280616, 0.30270726936),
}
TINY = sorted(p for p in (ROOT / "instances" / "tiny").glob("*.json")
              if not p.name.endswith(".optimum.json"))
SLOW_PIPELINE = {"inception_v3_8nodes"}  # auto needs 5-30 s to reach its optimum (load)


def _pipeline_optimum(path: Path, objective: str) -> float:
    if path.parent.name == "tiny":
        known = json.loads(path.with_suffix(".optimum.json").read_text())
        return math.inf if known[objective] == "infeasible" else float(known[objective])
    return PIPELINE_OPTIMA[path.stem][objective == "latency"]


def test_every_shipped_instance_has_its_pipeline_optimum_listed() -> None:
    assert sorted(p.stem for p in SHIPPED) == sorted(PIPELINE_OPTIMA)


@pytest.mark.parametrize("objective", ["latency", "bottleneck"])
@pytest.mark.parametrize("path", [
    *(pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_PIPELINE else p
      for p in SHIPPED), *TINY], ids=lambda p: p.stem)
def test_hybrid_is_never_worse_than_the_pipeline_optimum(path: Path, objective: str) -> None:
    # chains and DAGs alike, within a time limit: the exact DP where it fits, else the best of
    # the pipeline solver and the group baselines; the bound is valid either way
    inst = load_instance(path)
    pipeline = _pipeline_optimum(path, objective)
    limit = 60.0 if path.stem in SLOW_PIPELINE else 8.0
    hybrid = solve(inst, "groups", SolveOptions(objective=objective, plan_space="hybrid",
                                                time_limit=limit))
    assert hybrid.bound_s <= pipeline * (1 + 1e-6)
    if math.isinf(pipeline):  # no pipeline plan: these tiny ones have no group plan either
        assert not hybrid.has_plan and hybrid.status is SolutionStatus.INFEASIBLE
        return
    assert hybrid.has_plan and not validate_plan(inst, hybrid.plan)
    assert hybrid.objective_s <= pipeline * (1 + 1e-6)
    assert hybrid.bound_s <= hybrid.objective_s * (1 + 1e-9)
    if path.parent.name == "tiny":  # the DP, or under direct transfers the pipeline proof
        assert hybrid.status is SolutionStatus.OPTIMAL


def test_split_wins_latency_on_four_equal_devices() -> None:
    # FlexPie's setting: one request at a time on 4 equal devices; a pipeline cannot beat one
    # device on latency, splitting the layers can (by more than 2x here)
    inst = load_instance(ROOT / "instances" / "hybrid_vgg16_4eq.json")
    pipeline = solve(inst, "groups", SolveOptions(objective="latency"))
    hybrid = solve(inst, "groups", SolveOptions(objective="latency", plan_space="hybrid"))
    assert hybrid.status is SolutionStatus.OPTIMAL
    assert any(s.mode is Mode.SPLIT for s in hybrid.plan.stages)
    assert hybrid.objective_s < pipeline.objective_s / 2
    for name in BASELINES:  # the optimum is no worse than any baseline; FlexPie's DP no worse
        base = solve(inst, name, SolveOptions(objective="latency", plan_space="hybrid"))
        assert base.has_plan and base.objective_s >= hybrid.objective_s * (1 - 1e-9)
        if name in ("onedim", "grid2d"):  # than a fixed scheme (same lead, same group)
            flexpie = solve(inst, "flexpie", SolveOptions(objective="latency"))
            assert flexpie.objective_s <= base.objective_s * (1 + 1e-9)


def test_replication_wins_the_period_with_one_fast_and_three_slow_devices() -> None:
    inst = load_instance(ROOT / "instances" / "hybrid_replicate_vgg16.json")
    pipeline = solve(inst, "groups", SolveOptions())
    hybrid = solve(inst, "groups", SolveOptions(plan_space="hybrid"))
    assert hybrid.status is SolutionStatus.OPTIMAL
    assert any(s.mode is Mode.REPLICATE for s in hybrid.plan.stages)
    assert hybrid.objective_s < pipeline.objective_s / 1.2


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), objective=st.sampled_from(["latency", "bottleneck"]))
def test_baselines_are_hybrid_plans_no_better_than_the_optimum(seed: int, objective: str) -> None:
    inst = tiny(seed, n=4, nd=3)
    best = solve(inst, "groups", SolveOptions(objective=objective, plan_space="hybrid"))
    for name in BASELINES:
        base = solve(inst, name, SolveOptions(objective=objective))
        if base.has_plan:
            assert best.status is SolutionStatus.OPTIMAL
            assert base.objective_s >= best.objective_s * (1 - 1e-9)


def test_compare_plan_space_lists_the_baselines(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny(7, n=4, nd=3).to_dict()))
    assert main(["compare", str(path), "--plan-space", "hybrid", "--objective", "latency",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["method"] for m in out["methods"]] == ["groups", *BASELINES]
    assert out["optimum"]["proven"] and not out["warnings"]
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(path), "--plan-space", "everything"])
    assert stop.value.code == 2
    assert "--plan-space" in capsys.readouterr().err


def test_evaluate_command_reads_group_plans(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inst = tiny(7, n=4, nd=3)
    (tmp_path / "inst.json").write_text(json.dumps(inst.to_dict()))
    result = solve(inst, "groups", SolveOptions(objective="latency", plan_space="hybrid"))
    result.plan.save(tmp_path / "plan.json")
    args = [str(tmp_path / "inst.json"), str(tmp_path / "plan.json")]
    assert main(["evaluate", *args, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["latency_s"] == pytest.approx(result.objective_s)
    groups = [s for s in evaluated["stages"] if "mode" in s]  # this draw's optimum is a split
    assert groups and all(s["mode"] == "split" and len(s["devices"]) >= 2 for s in groups)
    assert main(["evaluate", *args]) == 0  # the table people read


def test_profiling_records_split_shapes() -> None:
    torch = pytest.importorskip("torch")
    from edgepart.profiling.trace import trace_model, unit_shape

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(32, 5))
    traced = trace_model(model, (1, 3, 16, 16))
    shapes = [unit_shape(traced, u) for u in traced.units]
    # 16 x 16 -> conv stride 2 pad 1 -> 8 x 8 -> pool 2 -> 4 x 4 -> adaptive 2 (kernel and
    # stride 4 / 2 = 2) -> 2 x 2 -> flatten (keeps the [8, 2, 2] layout) -> linear 32 -> 5
    assert shapes == [
        {"kind": "conv", "in": [3, 16, 16], "out": [8, 8, 8], "groups": 1, "kernel": [3, 3],
         "stride": [2, 2], "padding": [1, 1]},
        {"kind": "elementwise", "in": [8, 8, 8], "out": [8, 8, 8]},
        {"kind": "pool", "in": [8, 8, 8], "out": [8, 4, 4], "kernel": [2, 2], "stride": [2, 2],
         "padding": [0, 0]},
        {"kind": "pool", "in": [8, 4, 4], "out": [8, 2, 2], "kernel": [2, 2], "stride": [2, 2],
         "padding": [0, 0]},
        {"kind": "elementwise", "in": [8, 2, 2], "out": [8, 2, 2]},
        {"kind": "linear", "in": [32, 1, 1], "out": [5, 1, 1]},
    ]
