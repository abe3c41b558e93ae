"""Optimum and solve time of every exact backend on the published samples in ``shared/external``.

* MSR device-placement inputs (``msr-dnn-partitioning/*_inference.json``), imported with and
  without their one CPU, and the human-expert bert24 split scored on the CPU-less instance;
* PipeDream profiles (``pipedream/*/graph.txt``) imported at batch 1 onto two 8-device clusters:
  ``edge8`` (2 Jetson Orin Nano, 2 Jetson Nano, 2 Raspberry Pi 5, 2 Raspberry Pi 4 on 1 Gbit/s
  Ethernet) and ``gpu8`` (8 V100-class GPUs on 10 Gbit/s Ethernet, PipeDream's own setting),
  the profiles taken as measured on a V100-class GPU (15.7 TFLOP/s FP32).

Usage: ``python bench/interop.py [EXTERNAL] [--solvers cpsat,highs,cbc] [--time-limit S]
[--json]``; EXTERNAL defaults to ``../shared/external`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepart import Instance, evaluate, solve
from edgepart.interop import msr, pipedream
from edgepart.profiling.catalog import parse_device_class
from edgepart.profiling.clusters import load_cluster

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"bert24_inference": 17.7899, "gnmt_inference": 32.9107}  # ALGORITHMS.md, k = 6
PROFILED_BATCH = {"vgg16": 128}  # its conv1 activation is 128 x 64 x 224 x 224 x 4 bytes
V100 = {"memory_bytes": 16 * 2**30, "flops_per_s": 1.57e13,
        "source": "NVIDIA V100 PCIe datasheet: 14-15.7 TFLOPS FP32"}
CLUSTERS: dict[str, dict[str, Any]] = {
    "edge8": {"name": "edge8",
              "devices": [{"class": c, "count": 2}
                          for c in ("jetson_orin_nano", "jetson_nano", "rpi5", "rpi4")],
              "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000}},
    "gpu8": {"name": "gpu8",
             "classes": {"v100": V100},
             "devices": [{"class": "v100", "count": 8}],
             "generator": {"kind": "ethernet", "bandwidth_mbit_s": 10000}},
}


def msr_instances(external: Path) -> Iterator[tuple[str, Instance, str]]:
    for path in sorted((external / "msr-dnn-partitioning").glob("*_inference.json")):
        graph = msr.read_msr(path)
        for cpus in (False, True):
            name = f"msr/{path.stem}" + ("+cpu" if cpus else "")
            note = f"reference {REFERENCE[path.stem]}" if path.stem in REFERENCE else ""
            yield name, msr.to_instance(graph, name=path.stem, cpus=cpus), note


def pipedream_instances(external: Path) -> Iterator[tuple[str, Instance, str]]:
    for path in sorted((external / "pipedream").glob("*/graph.txt")):
        model = path.parent.name
        graph = pipedream.read_pipedream(path)
        for cluster_name, spec in CLUSTERS.items():
            inst = pipedream.to_instance(graph, load_cluster(spec), batch_size=1,
                                         profiled_on=parse_device_class("v100", V100, "v100"),
                                         profiled_batch=PROFILED_BATCH.get(model, 256),
                                         name=f"{model}_{cluster_name}")
            yield f"pipedream/{model}@{cluster_name}", inst, ""


def expert_row(external: Path) -> dict[str, Any] | None:
    folder = external / "msr-dnn-partitioning"
    if not (folder / "bert24_inference_expert.json").exists():
        return None
    inst = msr.to_instance(msr.read_msr(folder / "bert24_inference.json"), cpus=False)
    plan = msr.split_to_plan(inst, msr.read_split(folder / "bert24_inference_expert.json"))
    return {"instance": "msr/bert24_inference", "solver": "human expert", "status": "given",
            "objective": evaluate(inst, plan).bottleneck_s, "bound": None, "solve_s": None,
            "layers": len(inst.model.layers), "devices": len(inst.devices), "note": ""}


def run(name: str, inst: Instance, note: str, solver: str, limit: float) -> dict[str, Any]:
    start = time.perf_counter()
    result = solve(inst, solver, time_limit=limit)
    return {"instance": name, "solver": solver, "status": result.status.value,
            "objective": result.objective_s if result.has_plan else None,
            "bound": result.bound_s, "solve_s": round(time.perf_counter() - start, 2),
            "layers": len(inst.model.layers), "devices": len(inst.devices),
            "stages": len(result.plan.stages) if result.plan else None, "note": note}


def show(row: dict[str, Any]) -> str:
    def num(x: Any) -> str:
        return "-" if x is None else f"{x:.6g}"

    return (f"{row['instance']:<34} {row['layers']:>4} {row['devices']:>3} {row['solver']:<12} "
            f"{row['status']:<9} {num(row['objective']):>12} {num(row['bound']):>12} "
            f"{num(row['solve_s']):>8} {row.get('stages') or '-':>3}  {row['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("external", nargs="?", default=str(ROOT.parent / "shared" / "external"))
    parser.add_argument("--solvers", default="cpsat,highs,cbc")
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    external = Path(args.external)
    if not args.json:
        print(f"{'instance':<34} {'lay':>4} {'dev':>3} {'solver':<12} {'status':<9} "
              f"{'objective':>12} {'bound':>12} {'time_s':>8} {'k':>3}  note")
    def emit(row: dict[str, Any]) -> None:
        print(json.dumps(row) if args.json else show(row), flush=True)

    expert = expert_row(external)
    if expert is not None:
        emit(expert)
    for source in (msr_instances, pipedream_instances):
        for name, inst, note in source(external):
            for solver in args.solvers.split(","):
                emit(run(name, inst, note, solver, args.time_limit))

if __name__ == "__main__":
    main()
