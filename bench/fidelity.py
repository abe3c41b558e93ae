"""Out-of-sample fidelity: measured against predicted on cgroup devices of fixed quotas (issue #12,
item 3).

Each device class is a CPU quota on this host, and its layer times are *measured* under that
quota (``edgepart.profiling.measure.profile_classes`` with ``--measure-on CLASS=cgroup:CPUS,MEM``:
looped timing in a cgroup made as ``--emulate cgroup`` makes a worker's), not scaled. Then for
every configuration (a model on a cluster of such devices) the optimal plan (CP-SAT) runs with
``edgepart run --emulate cgroup``: each worker's quota is its device's ``meta.cpus``, fixed, not
calibrated per stage from the prediction. Reported: measured / predicted throughput (``--inflight
auto``) and empty-pipeline latency (``--inflight 1``, p50), and the mean absolute error.

Configurations: AMP4EC's setting (MobileNetV2 on 3 workers of 1 CPU / 1 GB or 0.4 CPU / 512 MB,
1 Gbit/s, 0.2 ms; and the whole model on one such worker), and a mixed 0.25 / 0.5 / 1.0 CPU
cluster (MobileNetV2, ResNet-18). Every run uses ``--time-scale auto`` (quota / scale when the
host's cores cannot hold the devices at once; the times are divided back).

``--periods 5000,10000`` repeats the AMP4EC rows with the classes measured and run at each CFS
period (``EDGEPART_CFS_PERIOD_US``): what the period does to the fidelity.

    python bench/fidelity.py [--requests 40] [--periods 5000,10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table
from runtime import LATENCY_REQUESTS, edgepart_run, ms, optimal, r3, save

from edgepart import Plan, Stage, evaluate, load_instance

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"amp_1cpu": (1.0, 1e9), "amp_0.4cpu": (0.4, 512e6), "q0.25": (0.25, 1e9),
           "q0.5": (0.5, 1e9), "q1.0": (1.0, 1e9)}
CONFIGS = (  # (name, model, classes of its devices, monolithic baseline)
    ("amp4ec_0.4cpu", "mobilenet_v2", ("amp_0.4cpu",) * 3, True),
    ("amp4ec_1cpu", "mobilenet_v2", ("amp_1cpu",) * 3, True),
    ("mixed", "mobilenet_v2", ("q0.25", "q0.5", "q1.0"), False),
    ("mixed", "resnet18", ("q0.25", "q0.5", "q1.0"), False),
)
LINK = {"bandwidth_bytes_per_s": 1.25e8, "latency_s": 0.0002}  # 1 Gbit/s bridge, as AMP4EC


def measured_profile(model: str, classes: set[str], period: int, cache: Path) -> dict[str, Any]:
    """``model`` profiled with every class in ``classes`` measured under its quota (and memory
    limit) at CFS ``period``; cached."""
    path = cache / f"{model}.{period}.{'+'.join(sorted(classes))}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.measure import MeasureOn, profile_classes
    from edgepart.profiling.profile import ProfileOptions

    cluster = load_cluster({
        "name": "fidelity", "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000,
                                          "latency_s": LINK["latency_s"]},
        "classes": {c: {"memory_bytes": CLASSES[c][1], "flops_per_s": 1e11 * CLASSES[c][0],
                        "cores": 1, "cpus": CLASSES[c][0],
                        "source": f"this host under a cgroup quota of {CLASSES[c][0]} CPU"}
                    for c in sorted(classes)},
        "devices": [{"class": c} for c in sorted(classes)]})
    t0 = time.perf_counter()
    data = profile_classes(f"torchvision:{model}", cluster,
                           ProfileOptions(repeats=3, warmup=1, name=model),
                           [MeasureOn(c, *CLASSES[c]) for c in sorted(classes)])
    print(f"profiled {model} on {', '.join(sorted(classes))} at period {period} us in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    path.write_text(json.dumps(data))
    return data


def config_instance(profile: dict[str, Any], name: str, classes: tuple[str, ...]
                    ) -> dict[str, Any]:
    """The profile's layers on devices of ``classes``, each with its fixed quota in meta."""
    data = json.loads(json.dumps(profile))
    data["name"] = f"{profile['name']}_{name}"
    data["devices"] = [{"id": f"{c}-{i}", "class": c, "memory_bytes": CLASSES[c][1],
                        "flops_per_s": 1e11 * CLASSES[c][0], "meta": {"cpus": CLASSES[c][0]}}
                       for i, c in enumerate(classes)]
    data["links"] = {"default": dict(LINK)}
    data.pop("source", None)
    data.pop("sink", None)
    return data


def run_config(tmp: Path, data: dict[str, Any], plan: Plan, model: str, requests: int
               ) -> dict[str, Any]:
    inst = load_instance(data)
    predicted = evaluate(inst, plan)
    paths = save(tmp, inst.name, data), save(tmp, inst.name + ".plan", plan.to_dict())
    spec = f"torchvision:{model}"
    run = edgepart_run(*paths, spec, "--emulate", "cgroup", "--requests", str(requests))
    lat = edgepart_run(*paths, spec, "--emulate", "cgroup", "--requests",
                       str(LATENCY_REQUESTS), "--inflight", "1")
    tput, latency = run.get("throughput_per_s"), lat.get("latency_p50_s")
    return {
        "stages": len(plan.stages), "time_scale": run.get("time_scale"),
        "predicted_per_s": r3(predicted.throughput_per_s), "measured_per_s": r3(tput),
        "throughput_ratio": r3(tput / predicted.throughput_per_s) if tput else None,
        "predicted_latency_ms": ms(predicted.latency_s), "measured_latency_ms": ms(latency),
        "latency_ratio": r3(latency / predicted.latency_s) if latency else None,
        "stage_compute_ratio": _compute_ratios(lat),
        "mismatches": run.get("mismatches", 0) + lat.get("mismatches", 0),
        "note": run.get("error") or lat.get("error") or "",
    }


def _compute_ratios(report: dict[str, Any]) -> str:
    """Measured / predicted compute per stage at ``--inflight 1``: where a miss comes from."""
    return " ".join(f"{s['compute_s'] / s['predicted_compute_s']:.2f}"
                    for s in report.get("stages", []) if s.get("predicted_compute_s"))


def rows_for(period: int, configs: tuple[tuple[str, str, tuple[str, ...], bool], ...],
             requests: int, time_limit: float, cache: Path, tmp: Path) -> list[dict[str, Any]]:
    os.environ["EDGEPART_CFS_PERIOD_US"] = str(period)  # this process (profiling) and its runs
    rows = []
    for name, model, classes, mono in configs:
        profile = measured_profile(model, {c for cfg in configs if cfg[1] == model
                                           for c in cfg[2]}, period, cache)
        data = config_instance(profile, name, classes)
        inst = load_instance(data)
        variants = [("partitioned", data, optimal(inst, time_limit))]
        if mono:
            one = config_instance(profile, name + "_mono", classes[:1])
            layers = tuple(layer.id for layer in inst.model.layers)
            variants.append(("monolithic", one, Plan((Stage(one["devices"][0]["id"], layers),),
                                                     one["name"], "monolithic")))
        for kind, d, plan in variants:
            row = {"period_us": period, "config": name, "model": model, "plan": kind,
                   **run_config(tmp, d, plan, model, requests)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for period in sorted({r["period_us"] for r in rows}):
        part = [r for r in rows if r["period_us"] == period]
        for key in ("throughput_ratio", "latency_ratio"):
            values = [r[key] for r in part if r[key] is not None]
            out.append({"period_us": period, "quantity": key.split("_")[0],
                        "runs": len(values),
                        "mean_abs_error_%": round(100 * statistics.fmean(
                            abs(v - 1) for v in values), 1) if values else None,
                        "within_10%": sum(abs(v - 1) <= 0.1 for v in values)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=30.0, help="CP-SAT, per plan")
    parser.add_argument("--periods", default="5000",
                        help="CFS periods in us (comma-separated): the first runs every "
                             "configuration, the others the AMP4EC ones")
    parser.add_argument("--only", default=None, metavar="CONFIG",
                        help="run only the configurations of this name (e.g. amp4ec_0.4cpu)")
    parser.add_argument("--cache", default=str(ROOT / "out" / "bench-cache" / "fidelity"),
                        help="measured profiles (default out/bench-cache/fidelity, gitignored)")
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    periods = [int(p) for p in args.periods.split(",") if p]
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgepart-fidelity-") as tmp:
        chosen = tuple(c for c in CONFIGS if args.only in (None, c[0]))
        for k, period in enumerate(periods):
            configs = chosen if k == 0 else tuple(c for c in chosen if c[3])
            rows += rows_for(period, configs, args.requests, args.time_limit, cache, Path(tmp))
    print(f"\n## Fidelity on cgroup devices of fixed quotas ({(time.perf_counter() - t0) / 60:.0f}"
          f" min; load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)\n")
    print(markdown_table(rows))
    print()
    print(markdown_table(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
