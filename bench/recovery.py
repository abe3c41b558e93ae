"""Recovery after a stage is lost: notice to first answer of the new deployment, and the switch
to the exact re-plan (issue #12 item 4).

ResNet-50 on ``instances/resnet50_8nodes.json``, its optimal plan (``auto``), run with
``edgepart run --emulate pad --time-scale auto`` (each process its own ``--json`` run); stage
``--fail-stage`` (default 1) is lost after ``--fail-after`` requests, once killed (SIGKILL: its
process exits) and once hung (SIGSTOP: alive, silent; found by the heartbeat). Per run it prints:

* ``notice_to_first_answer_s``: wall seconds from the driver's notice of the loss to the first
  answer of the heuristic deployment (re-plan, redeploy, re-send, one pipeline latency at the
  time scale); the target is <= 3 s;
* ``heuristic_s`` / ``deploy_s``: the quick re-plan's wall time and its redeploy's;
* ``exact_solve_s`` / ``exact_switch_s``: the exact re-plan's solve time, and notice to its
  deployment (after draining the pipeline);
* answered / requests, mismatches, duplicates dropped (nothing lost: answered == requests);
* the run's warnings (host not keeping up, throughput below the prediction) and any other line
  on its stderr (there should be none);
* the host's load average (``os.getloadavg``) before the run, since wall times on a shared host
  depend on it.

    python bench/recovery.py [--requests 60] [--fail-stage 1] [--fail-after 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgepart import load_instance, solve

ROOT = Path(__file__).resolve().parents[1]
INSTANCE = ROOT / "instances" / "resnet50_8nodes.json"
MODEL = "torchvision:resnet50"
HEARTBEAT_TIMEOUT_S = 10.0
"""The default: on a host loaded 10x over its cores a 3 s timeout also lost live workers."""


def recovery_run(plan: Path, requests: int, stage: int, after: int, hang: bool) -> dict[str, Any]:
    """One ``edgepart run --json`` with a lost stage; its failure, summarised."""
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "edgepart.cli", "run", str(INSTANCE), str(plan), "--model", MODEL,
           "--emulate", "pad", "--time-scale", "auto", "--requests", str(requests),
           "--fail-stage", str(stage), "--fail-after", str(after),
           "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S), "--json",
           *(["--fail-hang"] if hang else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        return {"mode": "hang" if hang else "kill", "error": proc.stderr.strip()[-500:]}
    report = json.loads(proc.stdout)
    failure, *others = report["failure_events"]  # the injected one comes first
    exact = failure.get("exact", {})
    return {
        "mode": "hang" if hang else "kill", "device": failure["device"],
        "load_avg_1min": round(load, 2), "time_scale": report["time_scale"],
        "notice_to_first_answer_s": failure["recovery_s"],
        "heuristic": failure.get("replan_method"), "heuristic_s": failure.get("replan_s"),
        "deploy_s": failure.get("deploy_s"),
        "exact_status": exact.get("status"), "exact_solve_s": exact.get("solve_s"),
        "exact_switch_s": failure.get("exact_switch_s"),
        "heuristic_period_ms": 1e3 * failure["replan_period_s"],
        "exact_period_ms": 1e3 * exact["period_s"] if exact else None,
        "answered": report["completed"], "requests": report["requests"],
        "mismatches": report["mismatches"], "duplicates_dropped": report["duplicates_dropped"],
        "other_failures": [f"{f['device']}: {f['message']}" for f in others],
        "warnings": len(report["warnings"]),
        "other_stderr_lines": [ln for ln in proc.stderr.splitlines()
                               if not ln.startswith("edgepart run: warning:")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--fail-stage", type=int, default=1)
    ap.add_argument("--fail-after", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="one JSON line per run")
    args = ap.parse_args()
    result = solve(load_instance(INSTANCE), "auto", time_limit=60)
    if result.plan is None:
        sys.exit(f"no plan for {INSTANCE.name}: {result.message}")
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.json"
        plan.write_text(json.dumps(result.plan.to_dict()))
        for hang in (False, True):
            row = recovery_run(plan, args.requests, args.fail_stage, args.fail_after, hang)
            print(json.dumps(row) if args.json else _text(row), flush=True)


def _switch(seconds: float | None) -> str:
    return "not switched" if seconds is None else f"switched {seconds:.3f} s after the notice"


def _text(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['mode']}: failed: {row['error']}"
    return (f"{row['mode']:>4} {row['device']}: notice to first answer "
            f"{row['notice_to_first_answer_s']:.3f} s; heuristic {row['heuristic']} "
            f"{1e3 * row['heuristic_s']:.1f} ms + deploy {1e3 * row['deploy_s']:.0f} ms "
            f"(period {row['heuristic_period_ms']:.2f} ms); exact {row['exact_status']} in "
            f"{row['exact_solve_s']:.3f} s, {_switch(row['exact_switch_s'])} "
            f"(period {row['exact_period_ms']:.2f} ms); answered {row['answered']}/"
            f"{row['requests']}, mismatches {row['mismatches']}, duplicates dropped "
            f"{row['duplicates_dropped']}; load {row['load_avg_1min']}, time scale "
            f"{row['time_scale']:g}; other failures {row['other_failures']}; {row['warnings']} "
            f"warnings, other stderr lines {row['other_stderr_lines']}")


if __name__ == "__main__":
    main()
