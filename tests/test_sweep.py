"""edgepart sweep: parallel runs, resuming after a kill, Ray = local, the table's claims."""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from edgepart.cli import main
from edgepart.cost import evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.instance import Instance, load_instance
from edgepart.plan import Plan
from edgepart.results import SolveResult
from edgepart.solvers.base import GROUP_METHODS, METHODS, SolveOptions, register
from edgepart.suite import load_manifest
from edgepart.sweep import (
    EXACT,
    KEY,
    Task,
    default_threads,
    load_spec,
    make_spec,
    pipeline_run,
    read_table,
    resolve_methods,
    run_sweep,
    run_task,
    tasks,
)

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "instances" / "suite"
SMALL = [str(SUITE / f"{n}.json") for n in ("tv_vgg16_lab4", "pd_alexnet_edge8",
                                             "tv_vgg16_zero4_tight")]
VALUES = [*KEY, "status", "termination", "objective_s", "bound_s", "optimum_s", "gap_pct",
          "backend", "error", "plan"]
"""Columns that must not depend on timing or on the backend that ran the sweep."""


def _values(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[VALUES].sort_values(list(KEY)).reset_index(drop=True)


def test_parallel_sweep_rows_are_checked_plans(tmp_path: Path) -> None:
    methods = ["greedy", "even", "dp"]
    spec = make_spec(SMALL, methods, ["bottleneck", "latency"], [{}], 20)
    frame = run_sweep(spec, tmp_path / "t.parquet", jobs=2, progress=False)
    assert len(frame) == len(SMALL) * len(methods) * 2
    assert not frame.duplicated(list(KEY)).any()
    assert (frame["threads"] * 2 <= max(2, os.cpu_count() or 1)).all()
    manifest = load_manifest(SUITE / "manifest.json")
    for row in frame.itertuples():
        entry = manifest.entry(row.instance)
        assert entry is not None
        optimum = entry.optimum(row.objective)
        if not row.plan:
            assert row.status in ("none", "infeasible", "error")
            continue
        inst = load_instance(row.path)
        plan = Plan.from_dict(json.loads(row.plan))
        assert validate_plan(inst, plan) == []
        assert evaluate(inst, plan).objective(row.objective) == pytest.approx(row.objective_s,
                                                                              rel=1e-12)
        if optimum is not None:
            # no plan beats a proven optimum; the gap is measured against it
            assert row.objective_s >= optimum * (1 - 1e-6)
            assert row.gap_pct == pytest.approx(100 * (row.objective_s - optimum) / optimum)
    # the exact DP on these chains/relay DAGs proves the manifest's optimum again
    dp = frame[(frame["method"] == "dp") & frame["optimum_s"].notna()]
    assert len(dp) > 0 and (dp["gap_pct"].abs() < 1e-4).all()


def test_rerun_skips_done_rows_and_csv_works(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    spec = make_spec(SMALL[:1], ["greedy"], ["bottleneck"], [{}], 10)
    first = run_sweep(spec, out, progress=False)
    wider = make_spec(SMALL[:1], ["greedy", "even"], ["bottleneck"], [{}], 10)
    second = run_sweep(wider, out, progress=False)
    assert len(first) == 1 and len(second) == 2
    assert read_table(out).equals(second)
    assert _values(second.iloc[:1]).equals(_values(first))


def _rows(path: Path) -> int:
    try:
        return len(read_table(path))
    except InputError:
        return 0


def test_killed_sweep_resumes_without_duplicates(tmp_path: Path) -> None:
    spec_file = tmp_path / "sweep.json"
    instances = [str(SUITE / f"{n}.json") for n in (
        "tv_resnet50_lab8", "tv_vit_b_16_lab8", "tv_mobilenet_v2_lab8")]
    methods = ["dp", "dp_ideals", "greedy"]
    spec_file.write_text(json.dumps({"instances": instances, "methods": methods,
                                     "objectives": ["bottleneck", "latency"],
                                     "time_limit": 20}))
    total = len(instances) * len(methods) * 2
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "edgepart.cli", "sweep", str(spec_file), "--out", str(out),
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # the table appears with the first row (a cheap look; reading it would give the sweep
    # time to finish), and the rest of the runs take far longer than one poll
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
    proc.wait()
    partial = _rows(out)
    assert 0 < partial < total, "the sweep was not killed halfway"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = read_table(out)
    assert len(resumed) == total and not resumed.duplicated(list(KEY)).any()
    straight = run_sweep(load_spec(spec_file), tmp_path / "straight.parquet", jobs=2,
                         progress=False)
    pd.testing.assert_frame_equal(_values(resumed), _values(straight))


def test_ray_local_gives_the_local_rows(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # no shared memory, no sockets, ...
        pytest.skip(f"ray cannot start here: {err}")
    try:
        spec = make_spec(SMALL[:2], ["greedy", "dp", "random"], ["bottleneck", "latency"],
                         [{}], 20)
        on_ray = run_sweep(spec, tmp_path / "ray.parquet", jobs=2, ray_address="local",
                           progress=False)
    finally:
        ray.shutdown()
    local = run_sweep(spec, tmp_path / "local.parquet", jobs=2, progress=False)
    pd.testing.assert_frame_equal(_values(on_ray), _values(local))


def test_methods_come_from_the_registry() -> None:
    @register("test_only_heuristic")
    def _fake(inst: Instance, options: SolveOptions) -> SolveResult:
        raise AssertionError("never run")

    try:
        heuristics = resolve_methods(["heuristics"])
        assert "test_only_heuristic" in heuristics
        assert not set(EXACT) & set(heuristics)
        assert not set(GROUP_METHODS) & set(heuristics)
        assert {"greedy", "seifer", "dp"} <= set(heuristics)
        assert set(resolve_methods(["all"])) == set(METHODS)
    finally:
        del METHODS["test_only_heuristic"]


def test_a_method_that_ignores_its_limit_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    @register("test_only_endless")
    def _endless(inst: Instance, options: SolveOptions) -> SolveResult:
        while True:
            time.sleep(0.01)

    # stopped at 1.5 x 0.2 + 0.2 = 0.5 s; the module itself is patched (edgepart's __init__
    # exports compare.sweep under the same name)
    monkeypatch.setattr(importlib.import_module("edgepart.sweep"), "HARD_MARGIN_S", 0.2)
    try:
        task = Task("tv_vgg16_lab4", SMALL[0], "test_only_endless", "bottleneck", "{}", 0.2, 1)
        start = time.perf_counter()
        row = json.loads(run_task(task.to_json()))
        assert time.perf_counter() - start < 5
    finally:
        del METHODS["test_only_endless"]
    assert row["status"] == "error" and "overran its time limit" in row["error"]
    assert row["plan"] == "" and math.isnan(row["objective_s"])


def test_group_plans_get_no_gap_to_pipeline_optima() -> None:
    # the suite's optima are over pipeline plans; a device-group plan may beat them
    spec = make_spec(SMALL[:1], ["greedy", "dataparallel"], ["bottleneck"],
                     [{}, {"plan_space": "hybrid"}], 10)
    optimum = {(t.method, t.options): t.optimum_s for t in tasks(spec, 1)}
    assert optimum[("greedy", "{}")] is not None
    assert optimum[("greedy", '{"plan_space":"hybrid"}')] is None
    assert optimum[("dataparallel", "{}")] is None
    assert pipeline_run("greedy", {}) and not pipeline_run("dataparallel", {})


def test_threads_times_jobs_within_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    for jobs in (1, 2, 3, cores, 4 * cores):
        assert default_threads(jobs) >= 1
        assert jobs * default_threads(jobs) <= max(cores, jobs)


def test_sweep_file_errors_name_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"instances": SMALL[:1], "options": [{"formulation": "nope"}]}))
    with pytest.raises(InputError, match=r"options\[0\]: formulation"):
        load_spec(spec)
    spec.write_text(json.dumps({"instances": SMALL[:1], "options": [{"threads": 2}]}))
    with pytest.raises(InputError, match=r"options\[0\]\.threads: not a sweep option"):
        load_spec(spec)
    spec.write_text(json.dumps({"instances": ["nothing/*.json"]}))
    with pytest.raises(InputError, match="matches no file"):
        load_spec(spec)


@pytest.mark.parametrize("args, message", [
    (["--instances", SMALL[0], "--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--instances", SMALL[0], "--jobs", "0"], "--jobs: must be >= 1"),
    (["--instances", SMALL[0], "--time-limit", "-1"], "--time-limit: must be > 0"),
    (["--instances", "no/such/*.json"], "matches no file"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    assert main(["sweep", *args, "--out", str(tmp_path / "t.parquet")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgepart: ") and message in lines[0]
    assert not (tmp_path / "t.parquet").exists()


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    spec = make_spec(SMALL[:1], ["greedy"], ["bottleneck"], [{}], 10)
    with pytest.raises(InputError, match=r"pip install 'edgepart\[ray\]'"):
        run_sweep(spec, tmp_path / "t.parquet", ray_address="local", progress=False)
    assert not (tmp_path / "t.parquet").exists()


def test_cli_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--instances", SMALL[0], "--methods", "greedy,even", "--out",
                 str(tmp_path / "t.csv"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 2 and {m["method"] for m in data["methods"]} == {"greedy", "even"}
