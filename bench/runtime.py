"""The runtime against its own prediction: ``edgepart run`` on emulated clusters, one host.

* ResNet-50 (``instances/resnet50_8nodes.json`` and its 4-device subset: 2 Raspberry Pi 4, a
  Raspberry Pi 5, a Jetson Nano, the same links) with the CP-SAT optimal plan, in both emulation
  modes (``pad``, ``cgroup``): measured throughput (``--inflight auto``) and empty-pipeline
  latency (``--inflight 1``) next to the cost model's; the speedup over the best single device
  (the whole model on it, measured the same way, ``pad``); the real transport time per hop; the
  recovery after a stage's worker is killed mid-stream (8 devices, ``pad``).
* AMP4EC's setting: MobileNetV2 (profiled here, one thread) on 3 cgroup-limited workers of one
  profile, 1 CPU / 1 GB or 0.4 CPU / 512 MB, on a 1 Gbit/s bridge (0.2 ms), the optimal plan
  against the whole model on one such worker.

Every run is its own ``edgepart run ... --json`` process with ``--time-scale auto`` (the least
that this host should keep up with), run once more at the time scale it suggests if the host did
not keep up after all; all reported times are instance times. The tables go into
``docs/results.md`` between ``<!-- runtime:begin -->`` and ``<!-- runtime:end -->``.

    python bench/runtime.py [--requests 40] [--time-limit 60] [--no-write] [--raw FILE]

About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section

from edgepart import Instance, Plan, Stage, evaluate, load_instance, solve
from edgepart.profiling.clusters import load_cluster
from edgepart.profiling.profile import ProfileOptions, profile_instance

ROOT = Path(__file__).resolve().parents[1]
DROP_FOR_4 = {"rpi4-2", "rpi5-1", "rpi5-2", "nuc_cpu-0"}  # leaves lab4's classes
AMP4EC = {"1cpu_1gb": (1.0, 1e9), "0.4cpu_512mb": (0.4, 512e6)}
AMP4EC_NODES = 3
AMP4EC_REPORTED = {"latency": -78.35, "throughput": 414.73}  # % vs monolithic (arXiv 2504.00407)
LATENCY_REQUESTS = 12


RAW: list[dict[str, Any]] = []  # every report, for --raw


def edgepart_run(inst: Path, plan: Path, model: str, *args: str) -> dict[str, Any]:
    """``edgepart run --json`` in its own process, with ``--time-scale auto``, once more with the
    time scale it suggests when the host did not keep up; a failure becomes ``{"error": ...}``."""
    report = _run_once(inst, plan, model, "--time-scale", "auto", *args)
    if report.get("suggested_time_scale"):
        report = _run_once(inst, plan, model, "--time-scale",
                           str(report["suggested_time_scale"]), *args)
    RAW.append({"args": [str(inst), str(plan), model, *args], "report": report})
    return report


def _run_once(inst: Path, plan: Path, model: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edgepart.cli", "run", str(inst), str(plan), "--model", model,
           "--json", *args]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 900 s"}
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    report["process_s"] = time.perf_counter() - t0
    return report


def save(tmp: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def optimal(inst: Instance, time_limit: float) -> Plan:
    result = solve(inst, "cpsat", time_limit=time_limit)
    if result.plan is None:
        raise SystemExit(f"no plan for {inst.name}: {result.message}")
    return result.plan


def single_device(inst: Instance) -> tuple[dict[str, Any], Plan]:
    """The instance cut down to its best single device, and the one-stage plan on it."""
    layers = tuple(layer.id for layer in inst.model.layers)
    plans = [Plan((Stage(d.id, layers),), inst.name) for d in inst.devices]
    best = min(plans, key=lambda p: evaluate(inst, p).bottleneck_s)
    alone = inst.without_devices({d.id for d in inst.devices} - {best.stages[0].device})
    return alone.to_dict(), best


def pct(measured: float | None, predicted: float) -> float | None:
    if measured is None or not math.isfinite(measured) or not predicted:
        return None
    return round(100 * (measured - predicted) / predicted, 1)


def ms(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(1e3 * x, 2)


def r3(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 3)


def resnet_rows(tmp: Path, requests: int, time_limit: float) -> tuple[list[dict[str, Any]],
                                                                     dict[str, Any]]:
    eight = load_instance(ROOT / "instances" / "resnet50_8nodes.json")
    four = eight.without_devices(DROP_FOR_4).to_dict()
    four["name"] = "resnet50_4nodes"
    rows, failure = [], {}
    for data in (four, eight.to_dict()):
        inst = load_instance(data)
        plan = optimal(inst, time_limit)
        inst_path, plan_path = save(tmp, inst.name, data), save(tmp, inst.name + ".plan",
                                                                plan.to_dict())
        alone, alone_plan = single_device(inst)
        single = edgepart_run(save(tmp, inst.name + ".single", alone),
                              save(tmp, inst.name + ".single.plan", alone_plan.to_dict()),
                              "torchvision:resnet50", "--emulate", "pad", "--requests",
                              str(requests // 2))
        for mode in ("pad", "cgroup"):
            run = edgepart_run(inst_path, plan_path, "torchvision:resnet50", "--emulate", mode,
                               "--requests", str(requests))
            lat = edgepart_run(inst_path, plan_path, "torchvision:resnet50", "--emulate", mode,
                               "--requests", str(LATENCY_REQUESTS), "--inflight", "1")
            rows.append(_resnet_row(inst, plan, mode, run, lat, single))
        if inst.name == "resnet50_8nodes":
            failure = edgepart_run(inst_path, plan_path, "torchvision:resnet50", "--emulate",
                                   "pad", "--requests", str(requests), "--fail-stage", "2",
                                   "--fail-after", str(requests // 3))
    return rows, failure


def _resnet_row(inst: Instance, plan: Plan, mode: str, run: dict[str, Any], lat: dict[str, Any],
                single: dict[str, Any]) -> dict[str, Any]:
    predicted = evaluate(inst, plan)
    tput, single_tput = run.get("throughput_per_s"), single.get("throughput_per_s")
    return {
        "instance": inst.name, "stages": len(plan.stages), "emulate": mode,
        "time_scale": run.get("time_scale"),
        "predicted_per_s": r3(predicted.throughput_per_s), "measured_per_s": r3(tput),
        "throughput_err_%": pct(tput, predicted.throughput_per_s),
        "predicted_latency_ms": ms(predicted.latency_s),
        "measured_latency_ms": ms(lat.get("latency_p50_s")),
        "latency_err_%": pct(lat.get("latency_p50_s"), predicted.latency_s),
        "speedup_predicted": r3(run.get("predicted_speedup_vs_single_device")),
        "speedup_measured": r3(tput / single_tput) if tput and single_tput else None,
        "hop_transport_ms": ms(run.get("hop_transport_s")),
        "mismatches": run.get("mismatches", lat.get("mismatches")),
        "host_kept_up": run.get("host_keeps_up"),
        "note": run.get("error") or lat.get("error") or single.get("error") or "",
    }


def amp4ec_rows(tmp: Path, requests: int, time_limit: float) -> list[dict[str, Any]]:
    rows = []
    for profile, (cpus, memory) in AMP4EC.items():
        data = _amp4ec_instance(profile, cpus, memory)
        inst = load_instance(data)
        plan = optimal(inst, time_limit)
        one = inst.without_devices({d.id for d in inst.devices[1:]}).to_dict()
        layers = tuple(layer.id for layer in inst.model.layers)
        mono = Plan((Stage(inst.devices[0].id, layers),), inst.name, "monolithic")
        runs = {}
        for kind, (d, p) in {"partitioned": (data, plan), "monolithic": (one, mono)}.items():
            paths = save(tmp, f"{profile}.{kind}", d), save(tmp, f"{profile}.{kind}.plan",
                                                            p.to_dict())
            runs[kind] = (edgepart_run(*paths, "torchvision:mobilenet_v2", "--emulate", "cgroup",
                                       "--requests", str(requests), "--inflight",
                                       str(len(plan.stages) + 1)),
                          edgepart_run(*paths, "torchvision:mobilenet_v2", "--emulate", "cgroup",
                                       "--requests", str(LATENCY_REQUESTS), "--inflight", "1"))
        rows.append(_amp4ec_row(profile, plan, runs))
    return rows


def _amp4ec_instance(profile: str, cpus: float, memory: float) -> dict[str, Any]:
    """MobileNetV2 profiled here on one thread, on 3 workers of ``cpus`` CPUs each: a layer
    takes its host time / ``cpus`` there (the class's FLOP/s is ``cpus`` x the host's)."""
    host = 1e11  # any value: only the ratio to the class's FLOP/s matters
    cluster = load_cluster({
        "name": f"amp4ec_{profile}",
        "classes": {profile: {"memory_bytes": memory, "flops_per_s": host * cpus,
                              "source": "AMP4EC (arXiv 2504.00407) Docker resource profile"}},
        "devices": [{"class": profile, "count": AMP4EC_NODES}],
        "generator": {"kind": "ethernet", "bandwidth_mbit_s": 1000, "latency_s": 0.0002}})
    data = profile_instance("torchvision:mobilenet_v2", cluster, ProfileOptions(
        repeats=5, statistic="min", host_flops_per_s=host, name=f"mobilenet_v2_amp4ec_{profile}"))
    for dev in data["devices"]:
        dev["meta"] = {"cpus": cpus}
    return data


def _amp4ec_row(profile: str, plan: Plan, runs: dict[str, Any]) -> dict[str, Any]:
    (part, part_lat), (mono, mono_lat) = runs["partitioned"], runs["monolithic"]
    return {
        "profile": profile, "workers": AMP4EC_NODES, "stages": len(plan.stages),
        "mono_per_s": r3(mono.get("throughput_per_s")),
        "partitioned_per_s": r3(part.get("throughput_per_s")),
        "throughput_change_%": pct(part.get("throughput_per_s"), mono.get("throughput_per_s")),
        "predicted_throughput_change_%": pct(part.get("predicted_throughput_per_s"),
                                             mono.get("predicted_throughput_per_s")),
        "mono_latency_ms": ms(mono_lat.get("latency_p50_s")),
        "partitioned_latency_ms": ms(part_lat.get("latency_p50_s")),
        "latency_change_%": pct(part_lat.get("latency_p50_s"), mono_lat.get("latency_p50_s")),
        "loaded_latency_change_%": pct(part.get("latency_p50_s"), mono.get("latency_p50_s")),
        "mismatches": sum(r.get("mismatches", 0) for pair in runs.values() for r in pair),
        "note": "; ".join(r["error"] for pair in runs.values() for r in pair if "error" in r),
    }


def failure_row(report: dict[str, Any]) -> dict[str, Any]:
    event = (report.get("failure_events") or [{}])[0]
    scale = report.get("time_scale") or 1.0
    parts = [event.get(k) for k in ("recovery_s", "replan_s", "deploy_s")]
    refill = (parts[0] - parts[1] - parts[2]) / scale if None not in parts else None
    return {"instance": "resnet50_8nodes", "time_scale": scale, "killed": event.get("device"),
            "after_answers": event.get("requests_answered"), "requests": report.get("requests"),
            "answered": report.get("completed"), "mismatches": report.get("mismatches"),
            "duplicates_dropped": report.get("duplicates_dropped"),
            "failures": report.get("failures"), "replans": report.get("replans"),
            "replan_ms": ms(event.get("replan_s")), "redeploy_ms": ms(event.get("deploy_s")),
            "recovery_ms": ms(event.get("recovery_s")), "refill_ms_instance": ms(refill),
            "devices_after": ", ".join(report["deployments"][-1]["devices"])
            if report.get("deployments") else None,
            "note": report.get("error", "")}


def section(resnet: list[dict[str, Any]], failure: dict[str, Any], amp: list[dict[str, Any]],
            wall_s: float, requests: int) -> str:
    within = [r for r in resnet if r["throughput_err_%"] is not None]
    good = sum(abs(r["throughput_err_%"]) <= 10 for r in within)
    return f"""## Runtime: measured against predicted

Made by `python bench/runtime.py --requests {requests}` (Python {platform.python_version()}, \
{platform.machine()}, {wall_s / 60:.0f} min in all) on a shared 2-core host. Every run is its own \
`edgepart run --json` process on 127.0.0.1 with `--time-scale auto` (and once more at the scale \
it suggests if the host did not keep up); times are instance times \
(wall time / time scale). Throughput at `--inflight auto`, latency (p50) at `--inflight 1` \
({LATENCY_REQUESTS} requests). `speedup_measured` divides by the whole model measured alone on \
the best single device (`pad`); `hop_transport_ms` is the real RPC time of one message, which \
the link emulation absorbs.

### ResNet-50, the optimal (CP-SAT) plan

{markdown_table(resnet)}

Throughput within 10% of the prediction: {good} of {len(within)} runs.

### A stage killed mid-stream (`--fail-stage 2 --fail-after {requests // 3}`, `pad`)

`recovery_ms` is wall time from noticing the failure to the first answer of the new deployment:
the re-plan (CP-SAT on the devices left), the redeploy, and refilling the pipeline, which takes a
pipeline latency of emulated time (`refill_ms_instance`, in instance time).

{markdown_table([failure_row(failure)])}

### AMP4EC's setting: MobileNetV2 on cgroup-limited workers

{AMP4EC_NODES} workers of one profile; the optimal plan against the whole model on one worker \
of the same profile (`monolithic`). Throughput with {AMP4EC_NODES + 1} requests in flight; \
`latency_change_%` at `--inflight 1` (empty pipeline), `loaded_latency_change_%` with \
{AMP4EC_NODES + 1} in flight. AMP4EC reports {AMP4EC_REPORTED['latency']}% latency and \
+{AMP4EC_REPORTED['throughput']}% throughput against its monolithic baseline. Caveat: a CPU quota \
only slows work longer than a few scheduler periods (5 ms here, see docs/runtime.md's quota \
fidelity section), so a stage shorter than that runs in one burst at full speed: the \
`--inflight 1` latencies of short stages are optimistic, and more so for the partitioned plan \
(shorter stages) than for the monolithic one. Throughput, a sustained rate, is not affected.

{markdown_table(amp)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--time-limit", type=float, default=60.0, help="CP-SAT, per plan")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    parser.add_argument("--raw", default=None, metavar="FILE", help="write every run's report")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepart-bench-") as tmp:
        resnet, failure = resnet_rows(Path(tmp), args.requests, args.time_limit)
        amp = amp4ec_rows(Path(tmp), args.requests, args.time_limit)
    text = section(resnet, failure, amp, time.perf_counter() - t0, args.requests)
    print(text)
    if args.raw:
        Path(args.raw).write_text(json.dumps(RAW, indent=1))
    if not args.no_write:
        write_section("runtime", text)


if __name__ == "__main__":
    main()
