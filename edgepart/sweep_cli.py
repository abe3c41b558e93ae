"""``edgepart sweep``: every (instance, method, objective, options) combination into one table
(parsing and printing only; the logic is :mod:`edgepart.sweep`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from edgepart.cli_common import EXIT_OK, print_json
from edgepart.errors import InputError
from edgepart.sweep import (
    EXACT,
    expand_instances,
    load_spec,
    make_spec,
    resolve_methods,
    run_sweep,
)

__all__ = ["cmd_sweep", "register"]


def register(subparsers: Any) -> None:
    """Add the ``sweep`` sub-command."""
    p = subparsers.add_parser(
        "sweep", help="run many methods on many instances in parallel into a Parquet/CSV table")
    p.add_argument("spec", nargs="?", default=None, metavar="SWEEP.json",
                   help="sweep file (instances, methods, objectives, options, time_limit); "
                        "flags below replace its fields")
    p.add_argument("--instances", nargs="+", default=None, metavar="GLOB",
                   help="instance files, globs or a suite manifest.json")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help="registered method names, 'heuristics' (every method but "
                        + ", ".join(EXACT) + ") or 'all' (default heuristics)")
    p.add_argument("--objectives", nargs="+", default=None,
                   choices=["bottleneck", "latency"])
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="seconds per run (default 30)")
    p.add_argument("--out", required=True, metavar="TABLE.parquet",
                   help="the table (CSV when it ends in .csv); rows already there are skipped")
    p.add_argument("--jobs", type=int, default=1, help="parallel runs (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="solver threads per run (default: cores // jobs, 1 on Ray)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: a cluster address or 'local' (needs edgepart[ray])")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(handler=cmd_sweep)


def _names(values: list[str]) -> list[str]:
    return [n for v in values for n in v.split(",") if n]


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.spec is None and args.instances is None:
        raise InputError("sweep: give a sweep file or --instances")
    if args.time_limit is not None and not args.time_limit > 0:
        raise InputError(f"--time-limit: must be > 0, got {args.time_limit}")
    spec = load_spec(args.spec) if args.spec is not None else make_spec(
        args.instances, ["heuristics"], ["bottleneck"], [{}], 30.0, base=Path.cwd(),
        where="sweep")
    if args.instances is not None:
        files, manifests = expand_instances(args.instances, Path.cwd())
        spec = replace(spec, instances=files, manifests=manifests)
    if args.methods is not None:
        spec = replace(spec, methods=resolve_methods(_names(args.methods)))
    if args.objectives is not None:
        spec = replace(spec, objectives=tuple(args.objectives))
    if args.time_limit is not None:
        spec = replace(spec, time_limit=args.time_limit)
    frame = run_sweep(spec, args.out, jobs=args.jobs, threads=args.threads,
                      ray_address=args.ray)
    summary = _summary(frame)
    if args.json:
        print_json({"table": args.out, "rows": len(frame),
                    "methods": summary.reset_index().to_dict(orient="records")})
    else:
        print(summary.to_string(float_format=lambda x: f"{x:.3g}"))
        print(f"{len(frame)} rows in {args.out}")
    return EXIT_OK


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and objective: runs, plans, mean and max gap to the proven optima, failures."""
    grouped = frame.groupby(["method", "objective"])
    return pd.DataFrame({
        "runs": grouped.size(),
        "plans": grouped["objective_s"].count(),
        "mean_gap_pct": grouped["gap_pct"].mean(),
        "max_gap_pct": grouped["gap_pct"].max(),
        "errors": grouped["status"].apply(lambda s: int((s == "error").sum())),
        "mean_wall_s": grouped["wall_s"].mean(),
    })
