"""Time to proven optimality of every exact backend on the shipped instances, in one run.

Each (instance, backend) runs in its own process (``edgepart solve --json``) with a time limit; a
failure becomes a status, not a crash. A backend is ``NAME`` (its default formulation) or
``NAME/FORMULATION`` (``stages`` or ``paths``). Prints a table and the ratio of each run's time to
CP-SAT's on the same instance in the same run, and writes it into docs/results.md.

With ``--before DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/before
REV``) every backend also runs on that code (``PYTHONPATH=DIR``), in the same run on the same
machine, as ``before:NAME``; ``time_vs_before`` divides a run's time by its ``before:`` twin's
(``auto``'s by ``before:cpsat``, the earlier default). A backend unknown to the earlier code is an
error row there.

    python bench/solve_times.py [INSTANCE ...] [--backends auto,cpsat,highs,cbc,highs/stages]
                                [--time-limit 60] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
LEGEND = ("`backend` is a solver with its default formulation (CP-SAT: stage slots; HiGHS and "
          "CBC: paths through cuts where they apply; `auto`: the default, whose `answered_by` "
          "says which method answered) or `solver/formulation`; `before:` rows ran the "
          "earlier code in the same run; `solves` counts "
          "the feasibility questions the path search sent to the solver (0: pruning alone "
          "proved the incumbent optimal); `time_vs_cpsat` divides by CP-SAT's time on the same "
          "instance in the same run. See docs/formulations.md.")


def run(instance: Path, spec: str, time_limit: float, code: Path | None = None
        ) -> dict[str, object]:
    """One solve in its own process, with the installed edgepart or the tree at ``code`` (``-P``:
    the working directory is not put before it on the path)."""
    backend, _, formulation = spec.partition("/")
    cmd = [sys.executable, "-P", "-m", "edgepart.cli", "solve", str(instance), "--solver", backend,
           "--time-limit", str(time_limit), "--json", "--formulation", formulation or "auto"]
    env = dict(os.environ, **({"PYTHONPATH": str(code)} if code else {}))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit * 2 + 60,
                              env=env)
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as err:
        out = {"status": f"error: {type(err).__name__}"}
    wall = time.perf_counter() - start
    gap = out.get("gap")
    return {"instance": instance.stem, "backend": f"before:{spec}" if code else spec,
            "status": out.get("status", "error"),
            "formulation": out.get("formulation", ""),
            "answered_by": out.get("backend", ""),
            "solves": "" if out.get("feasibility_solves") is None else out["feasibility_solves"],
            "objective_ms": _ms(out.get("objective_value_s")), "bound_ms": _ms(out.get("bound_s")),
            "gap_pct": None if gap is None else round(100 * float(gap), 4),
            "solve_time_s": round(float(out.get("solve_time_s") or wall), 2),
            "wall_s": round(wall, 2)}


def _ratio(df: pd.DataFrame, base_of: Callable[[str], str]) -> list[float | None]:
    """Each row's time over the time of the row ``base_of(backend)`` on the same instance."""
    ok = df[df.status.isin(["optimal", "feasible"])]
    times = ok.set_index(["instance", "backend"]).solve_time_s.to_dict()
    out = []
    for inst, backend, t in zip(df.instance, df.backend, df.solve_time_s, strict=True):
        base = times.get((inst, base_of(backend)))
        solved = (inst, backend) in times  # an error row's time is no solve time
        out.append(round(t / base, 2) if base and solved and not backend.startswith("before:")
                   else None)
    return out


def _ms(x: object) -> float | None:
    return None if x is None else round(float(x) * 1e3, 4)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instances", nargs="*", type=Path)
    parser.add_argument("--backends", default="auto,cpsat,highs,cbc,highs/stages")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="also run every backend on the edgepart tree at DIR")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/results.md")
    args = parser.parse_args()
    instances = args.instances or sorted((ROOT / "instances").glob("*.json"))
    rows = []
    for inst in instances:
        for backend in args.backends.split(","):
            for code in ([None, args.before] if args.before else [None]):
                row = run(inst, backend, args.time_limit, code)
                print(json.dumps(row), flush=True)
                rows.append(row)
    df = pd.DataFrame(rows)
    df["time_vs_cpsat"] = _ratio(df, lambda backend: "cpsat")
    if args.before:
        # auto is the new default: its baseline is the old default, CP-SAT
        df["time_vs_before"] = _ratio(
            df, lambda backend: f"before:{'cpsat' if backend == 'auto' else backend}")
    table = markdown_table(df.to_dict("records"))
    print(table)
    if not args.no_write:
        command = "python bench/solve_times.py " + " ".join(sys.argv[1:])
        write_section("solve_times", f"## Exact solve times\n\nMade by `{command.strip()}` "
                      f"(time limit {args.time_limit:g} s per run, 2-core machine). {LEGEND}"
                      f"\n\n{table}\n")


if __name__ == "__main__":
    main()
