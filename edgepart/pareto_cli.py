"""``edgepart pareto INSTANCE``: the exact front of period and latency (parsing and printing only;
the logic is :mod:`edgepart.pareto`)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from edgepart.cli_common import EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.instance import load_instance
from edgepart.pareto import ParetoFront, ParetoPoint, pareto_front
from edgepart.solvers.base import FORMULATIONS

__all__ = ["cmd_pareto", "register"]


def register(subparsers: Any) -> None:
    """Add the ``pareto`` sub-command."""
    p = subparsers.add_parser(
        "pareto", help="every optimal trade-off of period (throughput) and latency")
    p.add_argument("instance")
    p.add_argument("--solver", default="auto", help="auto (default), cpsat, highs, cbc or brute")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="seconds for the whole front (default: none)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--formulation", choices=FORMULATIONS, default="auto",
                   help="exact solvers' model (as for solve)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw latency against period (a staircase) with the points")
    p.add_argument("--verbose", action="store_true",
                   help="a line per point on stderr (the default when stderr is a terminal; "
                        "solver logs are not shown, a front runs many solves)")
    p.set_defaults(handler=cmd_pareto)


def cmd_pareto(args: argparse.Namespace) -> int:
    inst = load_instance(args.instance)
    show = args.verbose or sys.stderr.isatty()
    count = 0

    def progress(point: ParetoPoint) -> None:
        nonlocal count
        count += 1
        print(f"edgepart: point {count}: period {point.period_s * 1e3:.4f} ms, latency "
              f"{point.latency_s * 1e3:.4f} ms, {len(point.plan.stages)} stages"
              f"{'' if point.proven else ' (not proven)'} [{point.solve_time_s:.2f} s]",
              file=sys.stderr, flush=True)

    front = pareto_front(inst, args.solver, time_limit=args.time_limit, threads=args.threads,
                         formulation=args.formulation,
                         progress=progress if show else None)
    if args.plot and front.points:
        from edgepart.plots import save_pareto_figure  # matplotlib only when asked

        save_pareto_figure(front.frame(), args.plot)
    if args.json:
        print_json(front.to_dict())
    else:
        _print(front)
    return EXIT_OK if front.points else EXIT_NO_PLAN


def _print(front: ParetoFront) -> None:
    if not front.points:
        print(f"{front.instance}: no plan: {front.message}")
        return
    head = (f"{'#':>3}  {'period ms':>12} {'throughput req/s':>17} {'latency ms':>12} "
            f"{'stages':>6}  {'proven':<16}  devices")
    print(head)
    print("-" * len(head))
    for k, p in enumerate(front.points, 1):
        proven = "yes" if p.proven else (f"no, gap {p.gap * 100:.2f} %" if math.isfinite(p.gap)
                                         else "no")
        print(f"{k:>3}  {p.period_s * 1e3:>12.4f} {p.throughput_per_s:>17.3f} "
              f"{p.latency_s * 1e3:>12.4f} {len(p.plan.stages):>6}  {proven:<16}  "
              f"{' '.join(s.device for s in p.plan.stages)}")
    state = "complete (every point proven)" if front.complete else "INCOMPLETE"
    print(f"{front.instance}: Pareto front of period and latency, {state}, by {front.solver} "
          f"in {front.wall_time_s:.2f} s ({front.solves} solves): {front.message}")
    for line in front.warnings:
        print(f"warning: {line}")
