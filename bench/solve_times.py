"""Time to proven optimality of every exact backend on the shipped instances, in one run.

Each (instance, backend) runs in its own process (``edgepart solve --json``) with a time limit; a
failure becomes a status, not a crash. A backend is ``NAME`` (its default formulation) or
``NAME/FORMULATION`` (``stages`` or ``paths``). Prints a table and the ratio of each run's time to
CP-SAT's on the same instance in the same run, and writes it into docs/results.md.

    python bench/solve_times.py [INSTANCE ...] [--backends cpsat,highs,cbc,highs/stages]
                                [--time-limit 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
LEGEND = ("`backend` is a solver with its default formulation (CP-SAT: stage slots; HiGHS and "
          "CBC: paths through cuts where they apply) or `solver/formulation`; `solves` counts "
          "the feasibility questions the path search sent to the solver (0: pruning alone "
          "proved the incumbent optimal); `time_vs_cpsat` divides by CP-SAT's time on the same "
          "instance in the same run. See docs/formulations.md.")


def run(instance: Path, spec: str, time_limit: float) -> dict[str, object]:
    backend, _, formulation = spec.partition("/")
    cmd = ["edgepart", "solve", str(instance), "--solver", backend, "--time-limit",
           str(time_limit), "--json", "--formulation", formulation or "auto"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit * 2 + 60)
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as err:
        out = {"status": f"error: {type(err).__name__}"}
    wall = time.perf_counter() - start
    gap = out.get("gap")
    return {"instance": instance.stem, "backend": spec, "status": out.get("status", "error"),
            "formulation": out.get("formulation", ""),
            "solves": "" if out.get("feasibility_solves") is None else out["feasibility_solves"],
            "objective_ms": _ms(out.get("objective_value_s")), "bound_ms": _ms(out.get("bound_s")),
            "gap_pct": None if gap is None else round(100 * float(gap), 4),
            "solve_time_s": round(float(out.get("solve_time_s") or wall), 2),
            "wall_s": round(wall, 2)}


def _ms(x: object) -> float | None:
    return None if x is None else round(float(x) * 1e3, 4)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instances", nargs="*", type=Path)
    parser.add_argument("--backends", default="cpsat,highs,cbc,highs/stages")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/results.md")
    args = parser.parse_args()
    instances = args.instances or sorted((ROOT / "instances").glob("*.json"))
    rows = []
    for inst in instances:
        for backend in args.backends.split(","):
            row = run(inst, backend, args.time_limit)
            print(json.dumps(row), flush=True)
            rows.append(row)
    df = pd.DataFrame(rows)
    base = df[df.backend == "cpsat"].set_index("instance").solve_time_s
    df["time_vs_cpsat"] = [round(t / base[i], 2) if i in base and base[i] > 0 else None
                           for i, t in zip(df.instance, df.solve_time_s, strict=True)]
    table = markdown_table(df.to_dict("records"))
    print(table)
    if not args.no_write:
        command = "python bench/solve_times.py " + " ".join(sys.argv[1:])
        write_section("solve_times", f"## Exact solve times\n\nMade by `{command.strip()}` "
                      f"(time limit {args.time_limit:g} s per run, 2-core machine). {LEGEND}"
                      f"\n\n{table}\n")


if __name__ == "__main__":
    main()
