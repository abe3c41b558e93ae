"""MSR device-placement format: every mapping rule, the max-load equivalence, split files, bad
files (one-line errors, exit 2), and the published bert24 check when the shared samples exist."""

from __future__ import annotations

import copy
import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from edgepart import InputError, evaluate, load_instance, load_plan, solve, validate_plan
from edgepart.interop import msr
from edgepart.interop.cli import main
from edgepart.plan import Plan, Stage

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external" / "msr-dnn-partitioning"


def node(i: int, fpga: float, cpu: float, *, size: float = 10.0, color: int | None = None,
         on_fpga: bool = True) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "supportedOnFpga": int(on_fpga), "cpuLatency": cpu,
            "fpgaLatency": fpga, "isBackwardNode": 0, "size": size,
            "colorClass": i if color is None else color}


def edge(src: int, dst: int, cost: float) -> dict[str, Any]:
    return {"sourceId": src, "destId": dst, "cost": cost, "size": 4.0}


@pytest.fixture
def diamond() -> dict[str, Any]:
    """1 -> {2, 3} -> 4 -> 5; nodes listed out of topological order; 2 and 3 share a colour;
    node 5 runs only on a CPU."""
    return {
        "maxSizePerFPGA": 100.0, "maxFPGAs": 2, "maxCPUs": 1,
        "nodes": [node(4, 4.0, 40.0), node(1, 1.0, 10.0), node(3, 3.0, 30.0, color=2),
                  node(2, 2.0, 20.0, size=7.0), node(5, 0.5, 5.0, on_fpga=False)],
        "edges": [edge(1, 2, 0.25), edge(1, 3, 0.25), edge(2, 4, 0.5), edge(3, 4, 0.75),
                  edge(4, 5, 0.125)],
    }


def test_devices_times_memory_and_classes(diamond: dict[str, Any]) -> None:
    inst = msr.to_instance(msr.parse_msr(diamond), name="d")
    assert [(d.id, d.cls) for d in inst.devices] == [("fpga0", "fpga"), ("fpga1", "fpga"),
                                                      ("cpu0", "cpu")]
    assert inst.devices[0].memory_bytes == 100.0
    assert inst.devices[2].memory_bytes > sum(x.param_bytes for x in inst.model.layers)
    layers = {x.id: x for x in inst.model.layers}
    assert layers["2"].time_s == {"fpga": 2.0, "cpu": 20.0}
    assert layers["2"].param_bytes == 7.0
    assert layers["2"].device_classes is None
    assert layers["5"].device_classes == ("cpu",)
    assert layers["5"].meta["msr_id"] == 5
    assert [x.id for x in inst.model.layers] == ["1", "2", "3", "4", "5"]


def test_colour_classes_costs_links_and_cost_model(diamond: dict[str, Any]) -> None:
    inst = msr.to_instance(msr.parse_msr(diamond), bandwidth_bytes_per_s=8.0)
    assert inst.model.colocate == (("2", "3"),)
    assert inst.model.tensor_bytes == (2.0, 4.0, 6.0, 1.0, 0.0)  # cost x B
    link = inst.link(0, 1)
    assert (link.bandwidth_bytes_per_s, link.latency_s) == (8.0, 0.0)
    assert inst.uniform_links
    assert link.time(inst.model.tensor_bytes[2]) == 0.75  # the link time is the edge cost
    assert not inst.cost_model.overlap and inst.cost_model.transfer.value == "direct"
    assert inst.source is None and inst.sink is None
    assert inst.meta["imported_from"] == "msr"


def test_no_cpus_drops_them_and_cpu_only_nodes_are_an_error(diamond: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"node 5 .*supportedOnFpga=false and --no-cpus"):
        msr.to_instance(msr.parse_msr(diamond), cpus=False)
    diamond["nodes"][-1]["supportedOnFpga"] = 1
    inst = msr.to_instance(msr.parse_msr(diamond), cpus=False)
    assert [d.cls for d in inst.devices] == ["fpga", "fpga"]
    assert inst.meta["cpus"].startswith("dropped")


def test_zero_cpus_with_cpu_only_node_is_an_error(diamond: dict[str, Any]) -> None:
    diamond["maxCPUs"] = 0
    with pytest.raises(InputError, match="maxCPUs is 0"):
        msr.to_instance(msr.parse_msr(diamond))


def their_loads(graph: dict[str, Any], group: dict[int, int]) -> dict[int, float]:
    """Their computeLoadForResultOrg (dp.cpp): group 0 is the CPU, which pays no transfer."""
    lat = {n["id"]: n["cpuLatency"] if group[n["id"]] == 0 else n["fpgaLatency"]
           for n in graph["nodes"]}
    cost = {e["sourceId"]: e["cost"] for e in graph["edges"]}
    load: dict[int, float] = defaultdict(float)
    for v, g in group.items():
        load[g] += lat[v]
    targets: dict[int, set[int]] = defaultdict(set)
    for e in graph["edges"]:
        if group[e["sourceId"]] != group[e["destId"]]:
            targets[e["sourceId"]].add(group[e["destId"]])
    for u, gs in targets.items():
        load[group[u]] += cost[u]
        for g in gs:
            load[g] += cost[u]
    return {g: (sum(lat[v] for v in group if group[v] == 0) if g == 0 else x)
            for g, x in load.items()}


def random_msr(seed: int, n: int = 7, fpgas: int = 3) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes = [node(i, rng.randint(0, 9) / 2, rng.randint(0, 9), size=1.0) for i in range(n)]
    pairs = {(i, i + 1) for i in range(n - 1)} | {
        (i, j) for i in range(n) for j in range(i + 2, n) if rng.random() < 0.3}
    cost = {i: rng.randint(0, 4) / 4 for i in range(n)}
    return {"maxSizePerFPGA": 1e9, "maxFPGAs": fpgas, "maxCPUs": 1, "nodes": nodes,
            "edges": [edge(i, j, cost[i]) for i, j in sorted(pairs)]}


def random_plan(inst: Any, rng: random.Random, cpu: bool) -> Plan:
    """A random monotone split of the chain order into 1..k stages, one stage maybe on cpu0."""
    ids = [x.id for x in inst.model.layers]
    fpgas = [d.id for d in inst.devices if d.cls == "fpga"]
    k = rng.randint(1, len(fpgas)) + cpu
    cuts = sorted(rng.sample(range(1, len(ids)), k - 1))
    devices = fpgas[: k - cpu] + (["cpu0"] if cpu else [])
    rng.shuffle(devices)
    bounds = [0, *cuts, len(ids)]
    return Plan(tuple(Stage(devices[b], tuple(ids[bounds[b]:bounds[b + 1]])) for b in range(k)))


@pytest.mark.parametrize("seed", range(25))
def test_max_load_equals_theirs_without_cpu_stage_and_bounds_it_with_one(seed: int) -> None:
    graph = random_msr(seed)
    inst = msr.to_instance(msr.parse_msr(graph), bandwidth_bytes_per_s=3.0)
    rng = random.Random(seed)
    for cpu in (False, True):
        plan = random_plan(inst, rng, cpu)
        assert validate_plan(inst, plan) == []
        group = {int(v): (0 if s.device == "cpu0" else 1 + int(s.device.removeprefix("fpga")))
                 for s in plan.stages for v in s.layers}
        theirs = their_loads(graph, group)
        metrics = evaluate(inst, plan)
        ours = {group[int(s.layers[0])]: s.time_s for s in metrics.stages}
        for g, load in theirs.items():
            if g == 0:
                assert ours[g] >= load - 1e-9  # our CPU also pays its transfers
            else:
                assert ours[g] == pytest.approx(load)
        if not cpu:
            assert metrics.bottleneck_s == pytest.approx(max(theirs.values()))


def test_brute_force_optimum_matches_their_max_load_on_a_tiny_graph() -> None:
    graph = random_msr(3, n=5, fpgas=2)
    graph["maxCPUs"] = 0
    inst = msr.to_instance(msr.parse_msr(graph))
    result = solve(inst, "brute")
    assert result.plan is not None
    group = {int(v): b + 1 for b, s in enumerate(result.plan.stages) for v in s.layers}
    assert result.objective_s == pytest.approx(max(their_loads(graph, group).values()))


# ---------------------------------------------------------------------------------------------
# Split files
# ---------------------------------------------------------------------------------------------


def no_cpu_instance(diamond: dict[str, Any]) -> Any:
    diamond["nodes"][-1]["supportedOnFpga"] = 1
    return msr.to_instance(msr.parse_msr(diamond), cpus=False)


def test_split_to_plan_orders_groups_forward(diamond: dict[str, Any]) -> None:
    inst = no_cpu_instance(diamond)
    split = msr.parse_split({"fpgas": [{"load": -1, "nodes": [4, 5]},
                                       {"load": -1, "nodes": [1, 2, 3]}], "cpus": []})
    plan = msr.split_to_plan(inst, split)
    assert [(s.device, s.layers) for s in plan.stages] == [("fpga1", ("1", "2", "3")),
                                                            ("fpga0", ("4", "5"))]
    assert validate_plan(inst, plan) == []


def test_split_round_trip_and_loads(diamond: dict[str, Any]) -> None:
    inst = msr.to_instance(msr.parse_msr(diamond))
    split = msr.parse_split({"fpgas": [{"nodes": [1, 2, 3]}, {"nodes": []}],
                             "cpus": [{"nodes": [4, 5]}]})
    plan = msr.split_to_plan(inst, split)
    out = msr.plan_to_split(inst, plan)
    assert out["fpgas"][0]["nodes"] == [1, 2, 3] and out["fpgas"][1]["nodes"] == []
    assert out["cpus"] == [{"load": pytest.approx(45.0 + 0.5 + 0.75), "nodes": [4, 5]}]
    assert out["maxLoad"] == evaluate(inst, plan).bottleneck_s
    assert msr.split_to_plan(inst, msr.parse_split(out)).stages == plan.stages


@pytest.mark.parametrize(("split", "message"), [
    ({"fpgas": [{"nodes": [1, 2, 3, 4, 5, 9]}]}, "unknown node id 9"),
    ({"fpgas": [{"nodes": [1, 2, 3]}, {"nodes": [3, 4, 5]}]}, "node 3 is also in fpgas"),
    ({"fpgas": [{"nodes": [1, 2, 3]}]}, "2 node.s. in no group"),
    ({"fpgas": [{"nodes": [1, 4, 5]}, {"nodes": [2, 3]}]}, "send tensors to each other"),
    ({"fpgas": [{"nodes": [1, 2, 3]}], "cpus": [{"nodes": [4, 5]}]}, "has 0 CPU device"),
    ({"fpgas": [{"nodes": [1]}, {"nodes": [2, 3]}, {"nodes": [4, 5]}]}, "has 2 accelerator"),
])
def test_bad_splits(diamond: dict[str, Any], split: dict[str, Any], message: str) -> None:
    inst = no_cpu_instance(diamond)
    with pytest.raises(InputError, match=message) as err:
        msr.split_to_plan(inst, msr.parse_split(split))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("split", "message"), [
    ([], "split: must be an object"),
    ({"cpus": []}, "missing required field 'fpgas'"),
    ({"fpgas": [{"nodes": ["a"]}]}, r"fpgas\[0\].nodes: must be an array of integer"),
    ({"fpgas": [{"load": 1}]}, r"fpgas\[0\]: missing required field 'nodes'"),
])
def test_bad_split_files(split: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        msr.parse_split(split)


# ---------------------------------------------------------------------------------------------
# Bad input files
# ---------------------------------------------------------------------------------------------


def broken(diamond: dict[str, Any], how: str) -> dict[str, Any]:
    d = copy.deepcopy(diamond)
    if how == "missing top":
        del d["maxFPGAs"]
    elif how == "missing node key":
        del d["nodes"][1]["fpgaLatency"]
    elif how == "unknown id":
        d["edges"][0]["destId"] = 42
    elif how == "inconsistent cost":
        d["edges"][1]["cost"] = 0.5
    elif how == "backward":
        d["nodes"][2]["isBackwardNode"] = 1
    elif how == "duplicate id":
        d["nodes"][1]["id"] = 4
    elif how == "negative":
        d["nodes"][0]["cpuLatency"] = -1
    elif how == "cycle":
        d["edges"].append(edge(5, 1, 0.125))
    return d


BAD = {
    "missing top": "msr: missing required field 'maxFPGAs'",
    "missing node key": r"nodes\[1\]: missing required field 'fpgaLatency'",
    "unknown id": r"edges\[0\].destId: unknown node id 42",
    "inconsistent cost": r"edges\[1\].cost: out-edges of node 1 must have one cost",
    "backward": r"nodes\[2\].isBackwardNode: node 3 is a backward node: training graphs",
    "duplicate id": r"nodes\[1\].id: duplicate id 4",
    "negative": r"nodes\[0\].cpuLatency: must be a finite number >= 0, got -1",
    "cycle": "the graph has a cycle",
}


@pytest.mark.parametrize("how", sorted(BAD))
def test_bad_files_one_line_error_and_exit_2(diamond: dict[str, Any], how: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(broken(diamond, how)))
    with pytest.raises(InputError, match=BAD[how]) as err:
        msr.to_instance(msr.read_msr(path))
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    assert main(["import", "msr", str(path), "--out", str(tmp_path / "i.json")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and err_text.startswith("edgepart: ")


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        msr.read_msr(path)
    with pytest.raises(InputError, match="cannot read"):
        msr.read_msr(tmp_path / "missing.json")


def test_bad_bandwidth(diamond: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="--bandwidth-bytes-per-s"):
        msr.to_instance(msr.parse_msr(diamond), bandwidth_bytes_per_s=0.0)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_import_export_round_trip(diamond: dict[str, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    src, inst_path = tmp_path / "g.json", tmp_path / "inst.json"
    src.write_text(json.dumps(diamond))
    assert main(["import", "msr", str(src), "--out", str(inst_path),
                 "--bandwidth-bytes-per-s", "2"]) == 0
    assert "CPU stages are charged their transfers" in capsys.readouterr().err
    inst = load_instance(inst_path)
    assert inst.link(0, 1).bandwidth_bytes_per_s == 2.0
    split_path, plan_path = tmp_path / "split.json", tmp_path / "plan.json"
    split_path.write_text(json.dumps({"fpgas": [{"nodes": [1, 2, 3]}, {"nodes": [4]}],
                                      "cpus": [{"nodes": [5]}]}))
    assert main(["import", "msr-plan", str(split_path), "--instance", str(inst_path),
                 "--out", str(plan_path)]) == 0
    plan = load_plan(plan_path)
    assert [s.device for s in plan.stages] == ["fpga0", "fpga1", "cpu0"]
    capsys.readouterr()
    assert main(["export-plan", "msr", str(plan_path), "--instance", str(inst_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["maxLoad"] == pytest.approx(evaluate(inst, plan).bottleneck_s)
    assert [g["nodes"] for g in out["fpgas"]] == [[1, 2, 3], [4]]


def test_cli_no_cpus_error_exit_2(diamond: dict[str, Any], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "g.json"
    src.write_text(json.dumps(diamond))
    assert main(["import", "msr", str(src), "--out", str(tmp_path / "i.json"), "--no-cpus"]) == 2
    assert "no device may run it" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The published inference graph (shared samples; skipped where they are absent)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (EXTERNAL / "bert24_inference.json").exists(),
                    reason="shared MSR samples not present")
def test_bert24_exact_backends_agree_and_expert_is_worse() -> None:
    inst = msr.to_instance(msr.read_msr(EXTERNAL / "bert24_inference.json"), cpus=False)
    expert = msr.split_to_plan(inst, msr.read_split(EXTERNAL / "bert24_inference_expert.json"))
    expert_load = evaluate(inst, expert).bottleneck_s
    results = [solve(inst, m, time_limit=120) for m in ("cpsat", "highs", "cbc")]
    assert all(r.status.value == "optimal" for r in results)
    assert all(math.isclose(r.objective_s, 17.7899, rel_tol=1e-5) for r in results)
    assert expert_load == pytest.approx(20.083953125)  # dp.cpp -expert gives the same
    assert expert_load > max(r.objective_s for r in results)
