"""``compare``: every method next to the exact optimum, as a table, JSON, a sweep and a picture."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest
from strategies import random_instance

from edgepart import InputError, load_instance
from edgepart.compare import COLUMNS, DEFAULT_METHODS, compare, run_comparison
from edgepart.compare_cli import register

TINY = Path(__file__).resolve().parents[1] / "instances" / "tiny"


def test_table_has_the_optimum_first_and_gaps_against_it() -> None:
    inst = load_instance(TINY / "dag5_relay.json")
    table = compare(inst, time_limit=20)
    assert tuple(table.columns) == COLUMNS
    assert table["method"].tolist() == ["auto", *DEFAULT_METHODS]
    assert table.loc[0, "status"] == "optimal" and table.loc[0, "gap_pct"] == 0.0
    optimum = json.loads((TINY / "dag5_relay.optimum.json").read_text())["bottleneck"]
    assert table.loc[0, "bottleneck_s"] == pytest.approx(optimum)
    planned = table.dropna(subset=["gap_pct"])
    assert (planned["gap_pct"] >= -1e-6).all()
    assert (planned["throughput_per_s"] * planned["bottleneck_s"]).round(9).eq(1.0).all()


def test_gap_is_to_the_best_bound_when_nothing_is_proven() -> None:
    inst = load_instance(random_instance(2, n=9, nd=3))
    comp = run_comparison(inst, ["even", "random"], exact=[])
    assert not comp.proven and comp.reference_s > 0
    assert all(comp.gap_pct(r) >= 0 for r in comp.runs if r.result.has_plan)


def test_json_form_and_plot_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    png = tmp_path / "gaps.png"
    args = parser.parse_args(["compare", str(TINY / "chain5_relay.json"), "--methods",
                              "dp,local", "even", "--time-limit", "20", "--json", "--plot",
                              str(png)])
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["instance"] == "chain5_relay"
    assert out["optimum"]["proven"] and out["optimum"]["bottleneck_s"] == pytest.approx(1.08)
    assert [m["method"] for m in out["methods"]] == ["auto", "dp", "local", "even"]
    for row in out["methods"]:
        assert {"method", "bottleneck_s", "latency_s", "gap_pct", "solve_time_s",
                "status"} <= row.keys()
    assert out["warnings"] == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_method_is_bad_input() -> None:
    with pytest.raises(InputError, match="unknown method"):
        run_comparison(load_instance(TINY / "two_layers.json"), ["nope"])


RESNET = Path(__file__).resolve().parents[1] / "instances" / "resnet50_8nodes.json"


@pytest.mark.skipif(not RESNET.exists(), reason="profiled suite not generated")
def test_compare_on_resnet50_8nodes_is_quick_and_complete() -> None:
    start = time.perf_counter()
    comp = run_comparison(load_instance(RESNET), time_limit=30)
    assert time.perf_counter() - start < 60
    assert comp.proven and not comp.violations
    assert [r.method for r in comp.runs] == ["auto", *DEFAULT_METHODS]
    assert all(r.result.has_plan for r in comp.runs)
