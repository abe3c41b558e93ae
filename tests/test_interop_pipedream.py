"""PipeDream profiler graphs: every mapping rule, batch scaling, speed factors, bad files."""

# ruff: noqa: E501  (the sample keeps PipeDream's one-line node format verbatim)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgepart import InputError, load_instance
from edgepart.interop import pipedream as pd
from edgepart.interop.cli import main
from edgepart.profiling.catalog import load_catalog
from edgepart.profiling.clusters import load_cluster

# Lines out of order (as PipeDream writes them), a branch (node3 feeds node4 and node5), a
# multi-output activation list and a partitioned graph's stage_id suffix.
GRAPH = """\
node4 -- Conv2d(8, 8, kernel_size=(3, 3)) -- forward_compute_time=2.000, backward_compute_time=4.000, activation_size=512.000, parameter_size=300.000
node1 -- Input -- forward_compute_time=600.000, backward_compute_time=0.000, activation_size=2560.000, parameter_size=0.000
node10 -- Add(inplace) -- forward_compute_time=0.500, backward_compute_time=0.000, activation_size=512.000, parameter_size=0.000 -- stage_id=1
node3 -- ReLU(inplace) -- forward_compute_time=1.000, backward_compute_time=1.000, activation_size=[256.000; 256.000], parameter_size=0.000
node2 -- Conv2d(3, 8, kernel_size=(3, 3)) -- forward_compute_time=10.000, backward_compute_time=20.000, activation_size=1024.000, parameter_size=1000.000
node5 -- Linear(in_features=8, out_features=8) -- forward_compute_time=4.000, backward_compute_time=8.000, activation_size=512.000, parameter_size=200.000
\tnode1 -- node2
\tnode2 -- node3
\tnode3 -- node4
\tnode3 -- node5
\tnode4 -- node10
\tnode5 -- node10
"""

CLUSTER: dict[str, Any] = {
    "name": "two-tier",
    "devices": [{"class": "jetson_orin_nano"}, {"class": "rpi4", "count": 2}],
    "generator": {"kind": "ethernet", "bandwidth_mbit_s": 100},
    "source": "rpi4-0",
}


@pytest.fixture
def graph() -> pd.PipeDreamGraph:
    return pd.parse_pipedream(GRAPH)


def test_parse(graph: pd.PipeDreamGraph) -> None:
    by_id = {n.id: n for n in graph.nodes}
    assert by_id["node3"].activation_bytes == 512.0  # the list is summed
    assert by_id["node2"].forward_ms == 10.0 and by_id["node2"].backward_ms == 20.0
    assert by_id["node10"].desc == "Add(inplace)"
    assert by_id["node1"].is_input and not by_id["node2"].is_input
    assert ("node3", "node5") in graph.edges and len(graph.edges) == 6


def test_layers_edges_and_input(graph: pd.PipeDreamGraph) -> None:
    inst = pd.to_instance(graph, load_cluster(CLUSTER), profiled_on="rpi4", name="g")
    g = inst.model
    assert [x.id for x in g.layers] == ["node2", "node3", "node4", "node5", "node10"]
    assert g.input_bytes == 2560.0  # the Input node is not a layer
    assert g.entries == (0,)
    layer = g.layers[0]
    assert (layer.op, layer.param_bytes, layer.output_bytes) == ("Conv2d", 1000.0, 1024.0)
    assert layer.meta["desc"] == "Conv2d(3, 8, kernel_size=(3, 3))"
    assert layer.meta["backward_s"] == pytest.approx(0.020)
    assert g.tensor_bytes == (1024.0, 512.0, 512.0, 512.0, 512.0)
    assert {(e.src, e.dst) for e in g.edges} == {
        ("node2", "node3"), ("node3", "node4"), ("node3", "node5"), ("node4", "node10"),
        ("node5", "node10")}
    assert inst.source == "rpi4-0" and inst.sink is None


def test_profiled_class_gets_measured_times_others_scale_by_speed_factor(
        graph: pd.PipeDreamGraph) -> None:
    inst = pd.to_instance(graph, load_cluster(CLUSTER), profiled_on="rpi4")
    times = inst.model.layers[0].time_s
    assert times["rpi4"] == pytest.approx(0.010)
    catalog = load_catalog()
    ratio = catalog.get("rpi4").flops_per_s / catalog.get("jetson_orin_nano").flops_per_s
    assert times["jetson_orin_nano"] == pytest.approx(0.010 * ratio)
    assert inst.meta["time_scale_by_class"]["rpi4"] == 1.0


def test_default_profiled_class_is_the_fastest(graph: pd.PipeDreamGraph) -> None:
    inst = pd.to_instance(graph, load_cluster(CLUSTER))
    assert inst.meta["profiled_on"] == "jetson_orin_nano"
    assert inst.model.layers[0].time_s["jetson_orin_nano"] == pytest.approx(0.010)


def test_profiled_on_a_catalog_class_outside_the_cluster(graph: pd.PipeDreamGraph) -> None:
    inst = pd.to_instance(graph, load_cluster(CLUSTER), profiled_on="laptop_cpu")
    catalog = load_catalog()
    ratio = catalog.get("laptop_cpu").flops_per_s / catalog.get("rpi4").flops_per_s
    assert inst.model.layers[0].time_s["rpi4"] == pytest.approx(0.010 * ratio)


def test_profiled_on_a_class_the_cluster_file_defines_without_a_device(
        tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text(GRAPH)
    gpu = {"memory_bytes": 16e9, "flops_per_s": 5.76e11}  # 10 x rpi4
    (tmp_path / "c.json").write_text(json.dumps({**CLUSTER, "classes": {"gpu": gpu}}))
    assert main(["import", "pipedream", str(tmp_path / "g.txt"), "--cluster",
                 str(tmp_path / "c.json"), "--out", str(tmp_path / "i.json"),
                 "--profiled-on", "gpu"]) == 0
    inst = load_instance(tmp_path / "i.json")
    assert inst.meta["profiled_on"] == "gpu"
    assert inst.model.layers[0].time_s["rpi4"] == pytest.approx(0.100)


def test_batch_size_scales_times_and_activations_not_parameters(
        graph: pd.PipeDreamGraph) -> None:
    inst = pd.to_instance(graph, load_cluster(CLUSTER), profiled_on="rpi4", batch_size=64)
    layer = inst.model.layers[0]
    assert layer.time_s["rpi4"] == pytest.approx(0.010 / 4)
    assert layer.output_bytes == 256.0 and inst.model.tensor_bytes[0] == 256.0
    assert inst.model.input_bytes == 640.0
    assert layer.param_bytes == 1000.0
    half = pd.to_instance(graph, load_cluster(CLUSTER), profiled_on="rpi4", batch_size=64,
                          profiled_batch=128)
    assert half.model.layers[0].output_bytes == 512.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"profiled_on": "no_such_class"}, "--profiled-on: unknown device class 'no_such_class'"),
    ({"batch_size": 0}, "--batch-size: must be >= 1"),
    ({"profiled_batch": 0}, "--profiled-batch: must be >= 1"),
])
def test_bad_options(graph: pd.PipeDreamGraph, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        pd.to_instance(graph, load_cluster(CLUSTER), **kwargs)


def replace_line(old: str, new: str) -> str:
    assert old in GRAPH
    return GRAPH.replace(old, new)


BAD = {
    "missing metric": (replace_line(", parameter_size=200.000", ""),
                       r"g.txt:6: missing parameter_size"),
    "bad number": (replace_line("forward_compute_time=4.000", "forward_compute_time=four"),
                   r"g.txt:6: forward_compute_time: not a number: 'four'"),
    "negative": (replace_line("activation_size=1024.000", "activation_size=-1"),
                 r"g.txt:5: activation_size: must be a finite number >= 0"),
    "unknown node": (replace_line("\tnode5 -- node10", "\tnode5 -- node99"),
                     r"g.txt:12: edge node5 -- node99: unknown node 'node99'"),
    "duplicate node": (replace_line("node5 -- Linear", "node4 -- Linear"),
                       r"g.txt:6: duplicate node id 'node4'"),
    "bad edge": (replace_line("\tnode4 -- node10", "\tnode4 node10"),
                 r"g.txt:11: edge line must be"),
    "bad node line": (replace_line("node2 -- Conv2d", "node2 Conv2d"), r"g.txt:5: node line"),
    "cycle": (GRAPH + "\tnode10 -- node2\n", "the graph has a cycle"),
    "empty": ("\n", "g.txt: no node lines"),
}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_files_one_line_error_and_exit_2(how: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    text, message = BAD[how]
    path = tmp_path / "g.txt"
    path.write_text(text)
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(CLUSTER))
    with pytest.raises(InputError, match=message) as err:
        pd.to_instance(pd.read_pipedream(path), load_cluster(cluster))
    assert "\n" not in str(err.value)
    assert main(["import", "pipedream", str(path), "--cluster", str(cluster),
                 "--out", str(tmp_path / "i.json")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and message.split(":")[-1].strip()[:12] in err_text


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "graph.txt").write_text(GRAPH)
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(CLUSTER))
    out = tmp_path / "inst.json"
    assert main(["import", "pipedream", str(folder / "graph.txt"), "--cluster", str(cluster),
                 "--out", str(out), "--profiled-on", "rpi4", "--batch-size", "128"]) == 0
    assert "5 layers" in capsys.readouterr().out
    inst = load_instance(out)
    assert inst.name == "tiny" and len(inst.devices) == 3
    assert inst.model.layers[0].time_s["rpi4"] == pytest.approx(0.005)
    bad_cluster = tmp_path / "bad.json"
    bad_cluster.write_text(json.dumps({**CLUSTER, "devices": [{"class": "toaster"}]}))
    assert main(["import", "pipedream", str(folder / "graph.txt"), "--cluster",
                 str(bad_cluster), "--out", str(out)]) == 2
    assert "unknown device class 'toaster'" in capsys.readouterr().err
