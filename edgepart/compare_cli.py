"""``edgepart compare INSTANCE``: every method next to the exact optimum (parsing and printing
only; the logic is :mod:`edgepart.compare`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from edgepart.cli_common import EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.compare import DEFAULT_METHODS, GROUP_BASELINES, Comparison, run_comparison
from edgepart.instance import load_instance
from edgepart.solvers.base import PlanSpace

__all__ = ["cmd_compare", "register"]


def register(subparsers: Any) -> None:
    """Add the ``compare`` sub-command."""
    p = subparsers.add_parser(
        "compare", help="run every heuristic and the exact optimum; print the gaps")
    p.add_argument("instance")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help="methods to compare (space- or comma-separated; default: "
                        + ", ".join(DEFAULT_METHODS) + ")")
    p.add_argument("--exact", default=None, metavar="NAME",
                   help="exact reference (default cpsat; 'none' for no exact run)")
    p.add_argument("--time-limit", type=float, default=30.0, metavar="S",
                   help="seconds per method (default 30)")
    p.add_argument("--objective", choices=["bottleneck", "latency"], default="bottleneck")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plan-space", choices=[s.value for s in PlanSpace], default="pipeline",
                   help="plans to search: pipeline (one device per stage, the default), or "
                        "stages that may also be replicated and/or split over device groups; "
                        "beyond pipeline the methods default to "
                        + ", ".join(GROUP_BASELINES) + " and the reference to groups")
    p.add_argument("--max-group", type=int, default=None, metavar="K",
                   help="most devices in one group (default: every device)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write the gap chart and the optimum's timeline")
    p.set_defaults(handler=cmd_compare)


def _names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [n for v in values for n in v.split(",") if n]


def cmd_compare(args: argparse.Namespace) -> int:
    inst = load_instance(args.instance)
    exact = None if args.exact is None else ([] if args.exact == "none" else [args.exact])
    comp = run_comparison(inst, _names(args.methods), exact, time_limit=args.time_limit,
                          objective=args.objective, seed=args.seed,
                          plan_space=args.plan_space, max_group=args.max_group)
    if args.plot:
        from edgepart.plots import save_comparison_figure  # matplotlib only when asked

        save_comparison_figure(comp, inst, args.plot)
    if args.json:
        print_json(comp.to_dict())
    else:
        _print(comp)
    return EXIT_OK if any(r.result.has_plan for r in comp.runs) else EXIT_NO_PLAN


def _print(comp: Comparison) -> None:
    print(comp.frame().to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    ref = comp.reference_s
    what = "optimum (proven)" if comp.proven else "best proven lower bound"
    shown = f"{ref:.6g} s" if math.isfinite(ref) else "none"
    best = comp.optimum
    print(f"{comp.instance}: {comp.objective.value} {what}: {shown}"
          + (f" by {best.method}" if best is not None and comp.proven else ""))
    for run in comp.runs:
        if run.result.message:
            print(f"  {run.method}: {run.result.message}")
    for line in comp.violations:
        print(f"warning: {line}")
