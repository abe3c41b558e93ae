"""Device groups at the command line: solve --plan-space, and the commands that cannot take groups.

The known answers of the group cost model and the groups DP are in test_groups.py and
test_hybrid.py; here only what the commands add: flags reach the solver, a group plan prints and
round-trips through evaluate, and export-plan (and run under cgroup emulation) refuse it in
one line (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPLICATE = ROOT / "instances" / "hybrid_replicate_vgg16.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepart.cli", *args], capture_output=True,
                          text=True, timeout=300)


def solve_json(*args: str) -> dict:
    proc = run("solve", str(REPLICATE), "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_hybrid_plan_space_is_never_worse_and_round_trips(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    pipeline = solve_json()
    hybrid = solve_json("--plan-space", "hybrid", "--out", str(plan))
    assert pipeline["status"] == hybrid["status"] == "optimal"
    # every pipeline plan is a hybrid plan, so the hybrid optimum can only be lower or equal
    assert hybrid["objective_value_s"] <= pipeline["objective_value_s"] * (1 + 1e-9)
    evaluated = run("evaluate", str(REPLICATE), str(plan), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["bottleneck_s"] == hybrid["bottleneck_s"]
    text = run("solve", str(REPLICATE), "--plan-space", "hybrid").stdout
    groups = [s for s in hybrid["stages"] if len(s.get("devices", [])) > 1]
    for s in groups:
        assert f"{s['mode']} over {', '.join(s['devices'])}" in text


def test_max_group_two_keeps_groups_at_two_devices() -> None:
    result = solve_json("--plan-space", "replicate", "--max-group", "2")
    assert all(len(s.get("devices", [])) <= 2 for s in result["stages"])


def test_bad_max_group_is_one_line() -> None:
    proc = run("solve", str(REPLICATE), "--plan-space", "hybrid", "--max-group", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "max_group" in proc.stderr


def _group_plan(tmp_path: Path) -> Path:
    plan = tmp_path / "group.json"
    devices = [d["id"] for d in json.loads(REPLICATE.read_text())["devices"]][:2]
    layers = [x["id"] for x in json.loads(REPLICATE.read_text())["model"]["layers"]]
    plan.write_text(json.dumps({"format_version": 1, "stages": [
        {"devices": devices, "mode": "replicate", "layers": layers}]}))
    return plan


def test_export_refuses_groups_in_one_line(tmp_path: Path) -> None:
    proc = run("export-plan", "msr", str(_group_plan(tmp_path)), "--instance", str(REPLICATE))
    assert proc.returncode == 2 and "stages[0]" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_run_refuses_groups_under_cgroup_emulation_in_one_line(tmp_path: Path) -> None:
    # groups run (tests/test_runtime_groups.py), but cgroup quotas are set per stage, not per
    # member of a group: that combination is refused before any worker starts
    proc = run("run", str(REPLICATE), str(_group_plan(tmp_path)), "--model",
               "torchvision:vgg16", "--requests", "1", "--emulate", "cgroup")
    assert proc.returncode == 2 and "--emulate cgroup" in proc.stderr
    assert "device group" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_hybrid_on_eight_devices_of_five_types_and_the_fallback() -> None:
    # resnet50_8nodes: a DAG on 8 devices of 5 types (1, 2, 3, 1, 1 devices); its proven
    # pipeline optima are 13.345056 ms (period) and 43.128271 ms (latency), see
    # tests/test_hybrid.py. The DP over multisets of types proves the period (8 distinct
    # devices would make 1,271 group modes, over its limit of 400; 5 types make 95), no worse
    # than the pipeline optimum
    dag = ROOT / "instances" / "resnet50_8nodes.json"
    period = json.loads(run("solve", str(dag), "--plan-space", "hybrid", "--json").stdout)
    assert period["status"] == "optimal" and "fallback" not in period
    assert period["group_modes"] == 95 and period["device_types"] == 5
    assert period["objective_value_s"] <= 0.013345056 * (1 + 1e-6)
    # no layer of it has a shape, so nothing can be split: the least latency is the pipeline
    # optimum, and the pipeline solver's bound proves it (the DP is not needed)
    latency = json.loads(run("solve", str(dag), "--plan-space", "hybrid", "--objective",
                             "latency", "--json").stdout)
    assert latency["status"] == "optimal" and "pipeline optimum" in latency["fallback"]["why"]
    assert latency["objective_value_s"] == pytest.approx(0.04312827129, rel=1e-9)
