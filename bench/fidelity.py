"""Out-of-sample fidelity: measured against predicted on devices of fixed CPU shares (issue #12,
item 3), per emulation mechanism.

Each device class is a CPU share of this host, and its layer times are *measured* with the
mechanism that the run emulates it with (``edgepart.profiling.measure.profile_classes``), not
scaled from the host's:

* ``cfs``: a real CFS quota (``--measure-on CLASS=cgroup:CPUS,MEM``: looped timing in a cgroup
  made as ``--emulate cgroup`` makes a worker's; run with ``--emulate cgroup``): a fast CPU
  switched off for part of each period;
* ``stretch``: a uniformly slower CPU (``--measure-on CLASS=stretch:CPUS``: the thread's CPU time
  / CPUS; run with ``--emulate stretch``: compute at full speed, then idle to CPU time / CPUS).

Then for every configuration (a model on a cluster of such devices) the optimal plan (CP-SAT)
runs: each worker's share is its device's ``meta.cpus``, fixed, never calibrated from the
prediction. Reported: measured / predicted throughput (``--inflight auto``) and empty-pipeline
latency (``--inflight 1``, p50), and the mean absolute error per mechanism. Also printed: the
host's idle cost (``edgepart devices probe``'s ``idle``: a small stage's CPU time after idling
5, 20 and 80 ms over its time right after its previous run) and, per row, the real time a stage
idles between requests at ``--inflight 1`` (``idle_gap_ms``: the latency times the time scale),
so a stage compute ratio above 1 can be read against the host's own idle cost.

The runtime's per-message cost on this host (``edgepart devices probe``'s ``rpc.per_message_s``,
measured at the start) is added to every link's latency (``--rpc add``, the default: an emulated
message really pays it; ``--rpc none`` leaves the links as AMP4EC's); each row also gives the
predicted latency without it, so the table shows how much it matters.

Configurations: AMP4EC's setting (MobileNetV2 on 3 workers of 1 CPU / 1 GB or 0.4 CPU / 512 MB,
1 Gbit/s, 0.2 ms; and the whole model on one such worker), under both mechanisms, and a mixed
0.25 / 0.5 / 1.0 CPU cluster (MobileNetV2, ResNet-18) under ``stretch`` (``--all-cfs``: under
``cfs`` too). Every run uses ``--time-scale auto`` (shares / scale when the host's cores cannot
hold the devices at once; the times are divided back), or the one given: on a loaded host a
larger scale leaves each worker more slack (a ``stretch`` worker stays uniform only while its
thread gets ``cpus / time scale`` of a core whenever it computes).

``--periods 5000,10000`` repeats the AMP4EC ``cfs`` rows with the classes measured and run at
each CFS period (``EDGEPART_CFS_PERIOD_US``): what the period does to the fidelity.

    python bench/fidelity.py [--requests 30] [--mechanisms stretch,cfs] [--rpc add|none]
                             [--time-scale X|auto] [--periods 5000] [--all-cfs]
                             [--only CONFIG] [--json FILE]

About 6 minutes on a quiet 2-core host once the profiles are cached (out/bench-cache/fidelity;
give a fresh ``--cache`` to measure them anew, on a new host or load).
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


MECHANISMS = {"cfs": "cgroup", "stretch": "stretch"}  # mechanism -> edgepart run --emulate


def measure_spec(mechanism: str, device_class: str) -> Any:
    """How ``device_class`` is measured for ``mechanism`` (the same way the run emulates it)."""
    from edgepart.profiling.measure import MeasureOn

    cpus, memory = CLASSES[device_class]
    if mechanism == "stretch":
        return MeasureOn(device_class, cpus, stretch=True)
    return MeasureOn(device_class, cpus, memory)


def measured_profile(model: str, classes: set[str], mechanism: str, period: int, cache: Path
                     ) -> dict[str, Any]:
    """``model`` profiled with every class in ``classes`` measured by ``mechanism`` (cfs: under
    its quota and memory limit at CFS ``period``); cached."""
    tag = str(period) if mechanism == "cfs" else mechanism
    path = cache / f"{model}.{tag}.{'+'.join(sorted(classes))}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.measure import profile_classes
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
                           [measure_spec(mechanism, c) for c in sorted(classes)])
    print(f"profiled {model} on {', '.join(sorted(classes))} ({mechanism}, {tag}) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    path.write_text(json.dumps(data))
    return data


def config_instance(profile: dict[str, Any], name: str, classes: tuple[str, ...],
                    rpc_s: float = 0.0) -> dict[str, Any]:
    """The profile's layers on devices of ``classes``, each with its fixed share in meta, on
    AMP4EC's links with ``rpc_s`` (the per-message cost) added to their latency."""
    data = json.loads(json.dumps(profile))
    data["name"] = f"{profile['name']}_{name}"
    data["devices"] = [{"id": f"{c}-{i}", "class": c, "memory_bytes": CLASSES[c][1],
                        "flops_per_s": 1e11 * CLASSES[c][0], "meta": {"cpus": CLASSES[c][0]}}
                       for i, c in enumerate(classes)]
    data["links"] = {"default": {**LINK, "latency_s": LINK["latency_s"] + rpc_s}}
    data.pop("source", None)
    data.pop("sink", None)
    return data


def run_config(tmp: Path, data: dict[str, Any], plan: Plan, model: str, requests: int,
               emulate: tuple[str, ...], no_rpc: dict[str, Any]) -> dict[str, Any]:
    """Run ``plan`` on ``data`` with ``edgepart run`` options ``emulate`` (throughput, then
    empty-pipeline latency); ``no_rpc``: the same configuration without the per-message cost in
    its links (its predicted latency only)."""
    inst = load_instance(data)
    predicted = evaluate(inst, plan)
    without_rpc = evaluate(load_instance(no_rpc), plan)
    paths = save(tmp, inst.name, data), save(tmp, inst.name + ".plan", plan.to_dict())
    spec = f"torchvision:{model}"
    run = edgepart_run(*paths, spec, *emulate, "--requests", str(requests))
    lat = edgepart_run(*paths, spec, *emulate, "--requests", str(LATENCY_REQUESTS),
                       "--inflight", "1")
    tput, latency = run.get("throughput_per_s"), lat.get("latency_p50_s")
    return {
        "stages": len(plan.stages), "time_scale": run.get("time_scale"),
        "predicted_per_s": r3(predicted.throughput_per_s), "measured_per_s": r3(tput),
        "throughput_ratio": r3(tput / predicted.throughput_per_s) if tput else None,
        "predicted_latency_ms": ms(predicted.latency_s), "measured_latency_ms": ms(latency),
        "latency_ratio": r3(latency / predicted.latency_s) if latency else None,
        "predicted_latency_no_rpc_ms": ms(without_rpc.latency_s),
        "stage_compute_ratio": _compute_ratios(lat),
        "idle_gap_ms": round(latency * 1e3 * (lat.get("time_scale") or 1.0)) if latency else None,
        "stage_real_share": _real_shares(lat),
        "mismatches": run.get("mismatches", 0) + lat.get("mismatches", 0),
        "note": run.get("error") or lat.get("error") or "",
    }


def _compute_ratios(report: dict[str, Any]) -> str:
    """Measured / predicted compute per stage at ``--inflight 1``: where a miss comes from."""
    return " ".join(f"{s['compute_s'] / s['predicted_compute_s']:.2f}"
                    for s in report.get("stages", []) if s.get("predicted_compute_s"))


def _real_shares(report: dict[str, Any]) -> str:
    """Real / emulated compute per stage at ``--inflight 1``: under ``stretch``, ``cpus / time
    scale`` when the thread got a core whenever it computed, 1.00 when it was starved (the host
    did not keep up); under ``cfs`` always 1.00 (the quota slows the real compute)."""
    return " ".join(f"{s['real_compute_s'] / s['compute_s']:.2f}"
                    for s in report.get("stages", []) if s.get("compute_s"))


def rows_for(mechanism: str, period: int, configs: tuple[tuple[str, str, tuple[str, ...], bool],
                                                       ...],
             options: argparse.Namespace, rpc_s: float, tmp: Path) -> list[dict[str, Any]]:
    """One row per configuration and plan (partitioned, and monolithic where marked)."""
    os.environ["EDGEPART_CFS_PERIOD_US"] = str(period)  # this process (profiling) and its runs
    rows = []
    for name, model, classes, mono in configs:
        profile = measured_profile(model, {c for cfg in CONFIGS if cfg[1] == model
                                           for c in cfg[2]}, mechanism, period,
                                   Path(options.cache))
        variants = [(name, classes)] + ([(name + "_mono", classes[:1])] if mono else [])
        for label, devices in variants:
            data = config_instance(profile, label, devices, rpc_s)
            inst = load_instance(data)
            plan = (optimal(inst, options.time_limit) if label == name else
                    Plan((Stage(inst.devices[0].id, tuple(x.id for x in inst.model.layers)),),
                         inst.name, "monolithic"))
            row = {"mechanism": mechanism, "period_us": period if mechanism == "cfs" else None,
                   "config": name, "model": model,
                   "plan": "partitioned" if label == name else "monolithic",
                   **run_config(tmp, data, plan, model, options.requests,
                                ("--emulate", MECHANISMS[mechanism], "--time-scale",
                                 options.time_scale), config_instance(profile, label, devices))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean absolute error and runs within 10%, per mechanism (and period) and quantity."""
    out = []
    for mechanism, period in sorted({(r["mechanism"], r["period_us"] or 0) for r in rows}):
        part = [r for r in rows if (r["mechanism"], r["period_us"] or 0) == (mechanism, period)]
        for key in ("throughput_ratio", "latency_ratio"):
            values = [r[key] for r in part if r[key] is not None]
            out.append({"mechanism": mechanism, "period_us": period or None,
                        "quantity": key.split("_")[0], "runs": len(values),
                        "mean_abs_error_%": round(100 * statistics.fmean(
                            abs(v - 1) for v in values), 1) if values else None,
                        "within_10%": sum(abs(v - 1) <= 0.1 for v in values)})
    return out


def idle_cost() -> None:
    """Print how much slower a small stage runs here after idling (``edgepart devices probe``'s
    ``idle``): at ``--inflight 1`` every stage idles about the pipeline's real latency
    (``idle_gap_ms``) between requests, which the back-to-back profile does not see."""
    from edgepart.profiling.probe import idle_cost as measure

    cost = measure()
    ratios = ", ".join(f"{cost.ratio(gap):.2f}x after {gap * 1e3:g} ms" for gap, _ in cost.after_s)
    print(f"idle cost on this host: a {cost.busy_s * 1e3:.1f} ms stage takes {ratios}",
          flush=True)


def rpc_cost(mode: str) -> float:
    """The runtime's per-message cost here (``edgepart devices probe``), 0 with ``--rpc none``."""
    from edgepart.profiling.probe import message_cost

    cost = message_cost()
    print(f"per-message cost on this host: {cost.per_message_s * 1e3:.3f} ms (copy "
          f"{cost.bytes_per_s / 1e9:.2f} GB/s); {'added to' if mode == 'add' else 'not in'} "
          f"every link's {LINK['latency_s'] * 1e3:.1f} ms latency", flush=True)
    return cost.per_message_s if mode == "add" else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--time-limit", type=float, default=30.0, help="CP-SAT, per plan")
    parser.add_argument("--mechanisms", default="stretch,cfs",
                        help="stretch and/or cfs (comma-separated; default both)")
    parser.add_argument("--rpc", choices=("add", "none"), default="add",
                        help="add the measured per-message cost to the links' latency (default)")
    parser.add_argument("--periods", default="5000",
                        help="CFS periods in us (comma-separated), each running the AMP4EC "
                             "configurations under cfs")
    parser.add_argument("--time-scale", default="auto", metavar="X|auto",
                        help="every run's --time-scale (default auto: the least the host's "
                             "cores fit; a larger one leaves a loaded host's workers slack)")
    parser.add_argument("--all-cfs", action="store_true",
                        help="the mixed configurations under cfs too (at the first period)")
    parser.add_argument("--only", default=None, metavar="CONFIG",
                        help="run only the configurations of this name (e.g. amp4ec_0.4cpu)")
    parser.add_argument("--cache", default=str(ROOT / "out" / "bench-cache" / "fidelity"),
                        help="measured profiles (default out/bench-cache/fidelity, gitignored)")
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    mechanisms = [m for m in args.mechanisms.split(",") if m]
    if not mechanisms or set(mechanisms) - set(MECHANISMS):
        parser.error(f"--mechanisms: expected some of {', '.join(MECHANISMS)}")
    periods = [int(p) for p in args.periods.split(",") if p]
    t0, load0 = time.perf_counter(), os.getloadavg()
    rpc_s = rpc_cost(args.rpc)
    idle_cost()
    rows: list[dict[str, Any]] = []
    chosen = tuple(c for c in CONFIGS if args.only in (None, c[0]))
    amp4ec = tuple(c for c in chosen if c[3])
    with tempfile.TemporaryDirectory(prefix="edgepart-fidelity-") as tmp:
        for mechanism in mechanisms:
            for k, period in enumerate(periods if mechanism == "cfs" else periods[:1]):
                configs = chosen if mechanism == "stretch" or (k == 0 and args.all_cfs) else amp4ec
                rows += rows_for(mechanism, period, configs, args, rpc_s, Path(tmp))
    print(f"\n## Fidelity on devices of fixed CPU shares ({(time.perf_counter() - t0) / 60:.1f}"
          f" min; load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; per-message cost {rpc_s * 1e3:.3f} ms in the links)\n")
    print(markdown_table(rows))
    print()
    print(markdown_table(summary(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
