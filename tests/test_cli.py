"""The command line: exit codes, one-line errors, --json, --out and evaluate round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgepart.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "instances" / "tiny"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepart.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_solve_json_has_the_documented_fields(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = run("solve", str(TINY / "two_layers.json"), "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("instance", "solver", "objective", "status", "objective_value_s", "bound_s",
                "gap", "solve_time_s", "bottleneck_s", "latency_s", "throughput_per_s",
                "stages"):
        assert key in data
    assert data["status"] == "optimal" and data["objective_value_s"] == pytest.approx(1.0)
    assert set(data["stages"][0]) >= {"device", "first_layer", "last_layer", "layers",
                                      "compute_s", "transfer_out_s", "memory_bytes"}
    evaluated = run("evaluate", str(TINY / "two_layers.json"), str(out), "--json")
    assert evaluated.returncode == 0
    assert json.loads(evaluated.stdout)["bottleneck_s"] == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["auto/auto", "cpsat/stages", "highs/stages", "highs/paths",
                                  "cbc/stages", "cbc/paths"])
def test_json_output_is_only_json_whatever_the_backend(spec: str) -> None:
    """Native solvers print banners and logs on stdout (HiGHS does when it is created); with
    --json stdout must hold the one JSON object and nothing else."""
    solver, _, formulation = spec.partition("/")
    proc = run("solve", str(TINY / "dag5_relay.json"), "--solver", solver, "--formulation",
               formulation, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "optimal" and data["backend"] in (solver, "dp_ideals", "lattice")


def test_a_closed_pipe_is_no_traceback() -> None:
    """``edgepart solve ... --json | head -1``: the reader goes away; no traceback on stderr."""
    proc = subprocess.run(f"{sys.executable} -m edgepart.cli solve "
                          f"{ROOT / 'instances' / 'vit_b_16_8nodes.json'} --json | head -1",
                          shell=True, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "{"
    assert "Traceback" not in proc.stderr


def test_human_output_has_a_stage_table(capsys: Any) -> None:
    assert main(["solve", str(TINY / "dag5_relay.json"), "--solver", "highs"]) == 0
    text = capsys.readouterr().out
    assert "stage  device" in text and "status: optimal" in text and "gap: 0.0000 %" in text


@pytest.mark.parametrize(("formulation", "shown"), [
    ("auto", "formulation: paths"), ("stages", "formulation: stages")])
def test_the_formulation_is_chosen_and_shown(formulation: str, shown: str, capsys: Any) -> None:
    # latency: the period would go to the lattice threshold search first (formulation "ideals")
    args = ["solve", str(TINY / "dag5_relay.json"), "--solver", "highs", "--objective", "latency",
            "--formulation", formulation]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert shown in text and "status: optimal" in text
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["formulation"] == shown.split()[1]


def test_forcing_paths_where_they_do_not_apply_is_exit_1_with_the_reason(capsys: Any) -> None:
    assert main(["solve", str(TINY / "dag6_direct.json"), "--solver", "cbc",
                 "--formulation", "paths"]) == 1
    assert "the path formulation does not apply: direct transfers" in capsys.readouterr().out


def test_infeasible_is_an_answer_with_the_reason(capsys: Any) -> None:
    assert main(["solve", str(TINY / "too_big.json")]) == 1
    out = capsys.readouterr().out
    assert "status: infeasible" in out
    assert "layer 'b' needs 2000000000 bytes" in out


@pytest.mark.parametrize(("args", "message"), [
    (["solve", "missing.json"], "edgepart: missing.json: cannot read (No such file or directory)"),
    (["solve", str(TINY / "two_layers.json"), "--solver", "nope"],
     "edgepart: solver: unknown method 'nope' (choose from "),
    (["solve", str(TINY / "two_layers.json"), "--time-limit", "-3"],
     "edgepart: time_limit: must be a positive number, got -3.0"),
    (["solve", str(TINY / "two_layers.json"), "--threads", "x"],
     "edgepart: argument --threads: invalid int value: 'x'"),
    (["frobnicate"], "edgepart: argument command: invalid choice: 'frobnicate'"),
    (["solve", str(TINY / "two_layers.json"), "--formulation", "columns"],
     "edgepart: argument --formulation: invalid choice: 'columns'"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bad_instance_names_the_field(tmp_path: Path) -> None:
    data = json.loads((TINY / "two_layers.json").read_text())
    data["model"]["layers"][0]["output_bytes"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    for command in ("solve", "validate"):
        proc = run(command, str(bad))
        assert proc.returncode == 2
        assert proc.stderr == "edgepart: model.layers[0].output_bytes: must be >= 0, got -1\n"
    data["devices"][1]["memory_bytes"] = -5
    bad.write_text(json.dumps(data))
    proc = run("validate", str(bad))
    assert proc.stderr.splitlines() == [
        "edgepart: model.layers[0].output_bytes: must be >= 0, got -1",
        "edgepart: devices[1].memory_bytes: must be > 0, got -5"]


def test_evaluate_rejects_an_invalid_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stages": [{"device": "d0", "layers": ["b"]},
                                           {"device": "d1", "layers": ["a"]}]}))
    proc = run("evaluate", str(TINY / "two_layers.json"), str(plan))
    assert proc.returncode == 2
    assert "edge a -> b goes backwards (stage 1 -> stage 0)" in proc.stderr


def test_validate_summarises(capsys: Any) -> None:
    assert main(["validate", str(TINY / "dag5_relay.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] and data["layers"] == 5 and data["graph"] == "DAG"


def test_solve_plot_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "plan.png"
    assert main(["solve", str(TINY / "dag5_relay.json"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
