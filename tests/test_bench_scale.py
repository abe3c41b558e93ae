"""Smoke tests of the scale benchmark: the graph generator (bench/graphs.py) makes valid instances
of the sizes asked, with per-class times that disagree, and bench/scale.py --quick runs end to end
with a tiny time limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepart import load_instance
from edgepart.cuts import ideal_family

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import graphs  # noqa: E402


@pytest.mark.parametrize("make, layers", [
    (lambda: graphs.chain(50), 50),
    (lambda: graphs.chain(2000), 2000),
    (lambda: graphs.bert(3), 48),
    (lambda: graphs.bert(142), 1994),
    (lambda: graphs.nasnet(1, stacks=1, stem_cells=1), 47),
    (lambda: graphs.nasnet(4), 344),  # NASNet-A Mobile
])
def test_graphs_are_valid_instances_of_the_size_asked(make, layers) -> None:
    g = make()
    inst = load_instance(graphs.instance(g, 8))
    assert len(inst.model.layers) == len(g) == layers
    assert len(inst.devices) == 8
    assert {d.cls for d in inst.devices} == set(graphs.CLASSES)


@pytest.mark.parametrize("target", [50, 200, 500, 1000, 2000])
def test_nasnet_sizes_near_the_target(target: int) -> None:
    g = graphs.nasnet(**graphs.nasnet_cells_for(target))
    assert abs(len(g) - target) <= 0.1 * target


def test_nasnet_cells_read_the_two_previous_cells_and_are_wide() -> None:
    g = graphs.nasnet(2, stacks=1, stem_cells=0)
    inputs = {layer.id: layer.inputs for layer in g.layers}
    assert inputs["n0_1_prep0"] == ("stem_conv",)  # h[i-2] of the second cell
    assert inputs["n0_1_prep1"] == ("n0_0_concat",)  # h[i-1]
    assert all(len(inputs[f"n0_0_b{b}_add"]) == 2 for b in range(5))
    assert len(inputs["n0_0_concat"]) == 6
    assert ideal_family(load_instance(graphs.instance(g, 4))) is None  # > 5,000 ideals


def test_bert_blocks_have_qkv_branches_and_few_ideals() -> None:
    g = graphs.bert(4)
    inputs = {layer.id: layer.inputs for layer in g.layers}
    assert inputs["l1_q"] == inputs["l1_k"] == inputs["l1_v"] == ("l0_ln2",)
    assert set(inputs["l1_scores"]) == {"l1_q", "l1_k"}
    fam = ideal_family(load_instance(graphs.instance(g, 4)))
    assert fam is not None and fam.size < 30 * 4


@pytest.mark.parametrize("make", [lambda: graphs.chain(60), lambda: graphs.bert(4),
                                  lambda: graphs.nasnet(1, stacks=1, stem_cells=1)])
def test_per_class_times_disagree(make) -> None:
    data = graphs.instance(make(), 4)
    times = np.array([[layer["time_s"][c] for c in graphs.CLASSES]
                      for layer in data["model"]["layers"]])
    assert (times > 0).all()
    for i in range(len(graphs.CLASSES)):
        for j in range(i + 1, len(graphs.CLASSES)):
            ratio = times[:, i] / times[:, j]
            assert ratio.max() / ratio.min() > 1.5, (graphs.CLASSES[i], graphs.CLASSES[j])


def test_device_counts() -> None:
    assert graphs.device_counts(4) == {c: 1 for c in graphs.CLASSES}
    assert graphs.device_counts(32) == {"rpi4": 12, "rpi5": 12, "jetson_nano": 4, "nuc_cpu": 4}
    assert sum(graphs.device_counts(64).values()) == 64


def test_wireless_network_has_a_link_matrix() -> None:
    data = graphs.instance(graphs.chain(10), 6, network="wireless", seed=3)
    inst = load_instance(data)
    bw = np.array(data["links"]["matrix"]["bandwidth_bytes_per_s"])
    assert bw.shape == (6, 6) and len(set(bw[np.triu_indices(6, 1)])) > 1
    assert inst.source == inst.sink == "rpi4-0"


def test_quick_run_writes_json_and_docs_section(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nkept\n")
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--quick", "--time-limit", "0.5",
         "--json", str(out), "--write-docs", "--results-file", str(results)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["method"] for r in rows} == {"cpsat", "highs", "auto"}
    assert len(rows) == 3 * len({r["instance"] for r in rows}) >= 12
    ok = {"optimal", "feasible", "none", "infeasible", "skipped"}
    assert all(r["status"] in ok for r in rows), [(r["instance"], r["method"], r["status"])
                                                   for r in rows if r["status"] not in ok]
    assert all(r["check"] == "ok" for r in rows if r["status"] != "skipped")
    assert len(data["meta"]["load_start"]) == len(data["meta"]["load_end"]) == 3
    text = results.read_text()
    assert "kept" in text and "<!-- scale:begin -->" in text and "<!-- scale:end -->" in text
    assert "Largest instance proven" in text
