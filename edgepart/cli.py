"""The ``edgepart`` command: argument parsing and printing only; all logic is in the library.

Exit codes: 0 a plan (or a valid file), 1 no plan (proven infeasible, or none within the time
limit; the reason is printed), 2 bad input or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from edgepart.bounds import quick_bound
from edgepart.cli_common import EXIT_BAD_INPUT, EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.cost import Metrics, evaluate, validate_plan
from edgepart.errors import InputError
from edgepart.formulations.model import Deadline
from edgepart.instance import Instance, load_instance
from edgepart.llm.rates import llm_rates, rates_line
from edgepart.plan import Plan, load_plan
from edgepart.results import SolveResult
from edgepart.solvers.base import FORMULATIONS, PlanSpace, SolveOptions, get_method

__all__ = ["console", "main"]

AREAS = ("edgepart.profiling.cli", "edgepart.compare_cli", "edgepart.pareto_cli",
         "edgepart.interop.cli", "edgepart.runtime.cli", "edgepart.sweep_cli",
         "edgepart.report_cli", "edgepart.estimator_cli", "edgepart.llm_cli")
"""Modules that add their own sub-commands with ``register(subparsers)``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        sys.stderr.write(f"edgepart: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgepart", description="Split a DNN into pipeline stages over "
                     "heterogeneous edge devices, prove how good the split is, and run it.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_solve(sub)
    p = sub.add_parser("validate", help="check an instance file and summarise it")
    p.add_argument("instance")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_validate)
    p = sub.add_parser("evaluate", help="score a plan under the instance's cost model")
    p.add_argument("instance")
    p.add_argument("plan")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)
    for name in AREAS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def _add_solve(sub: Any) -> None:
    p = sub.add_parser("solve", help="find the optimal plan (exact) or a heuristic plan")
    p.add_argument("instance")
    p.add_argument("--solver", default="auto",
                   help="auto (default: the exact backend the instance suits), cpsat, highs, "
                        "cbc, brute, or a heuristic's name")
    p.add_argument("--objective", choices=["bottleneck", "latency"], default="bottleneck")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="bounds the whole command from the moment it reads the instance")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-latency", type=float, default=None, metavar="S")
    p.add_argument("--max-period", type=float, default=None, metavar="S")
    p.add_argument("--warm-start", default=None, metavar="PLAN.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formulation", choices=FORMULATIONS, default="auto",
                   help="exact solvers' model: stage slots, paths through cuts (relay transfers "
                        "or chains) or auto (paths for highs/cbc where they apply)")
    p.add_argument("--plan-space", choices=[s.value for s in PlanSpace], default="pipeline",
                   help="plans to search: pipeline (default: one device per stage), replicate, "
                        "split or hybrid (stages may be device groups; docs/hybrid.md)")
    p.add_argument("--max-group", type=int, default=None, metavar="K",
                   help="most devices in one group (default: every device)")
    p.add_argument("--out", default=None, metavar="PLAN.json", help="write the plan here")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the plan's timeline (Gantt chart of stages and transfers)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--verbose", action="store_true", help="solver logs on stderr")
    p.set_defaults(handler=cmd_solve)


def cmd_solve(args: argparse.Namespace) -> int:
    deadline = Deadline.after(args.time_limit)  # the limit bounds loading too
    inst = load_instance(args.instance)
    method = get_method(args.solver, args.plan_space)
    options = SolveOptions(objective=args.objective, time_limit=args.time_limit,
                           plan_space=args.plan_space, max_group=args.max_group,
                           threads=args.threads, max_latency=args.max_latency,
                           max_period=args.max_period, seed=args.seed, verbose=args.verbose,
                           formulation=args.formulation,
                           warm_start=load_plan(args.warm_start) if args.warm_start else None
                           ).with_time_left(deadline)
    if args.verbose:
        print(f"edgepart: solving {inst.name} ({len(inst.model.layers)} layers, "
              f"{len(inst.devices)} devices) with {args.solver}", file=sys.stderr)
    result = method(inst, options)
    if result.plan is not None and args.out:
        result.plan.save(args.out)
    if result.plan is not None and args.plot:
        _plot_plan(inst, result.plan, args.plot)
    if args.json:
        print_json({**result.to_dict(inst.name), **_llm_json(inst, result.metrics)})
    else:
        _print_result(inst, result)
    return EXIT_OK if result.has_plan else EXIT_NO_PLAN


def _plot_plan(inst: Instance, plan: Plan, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgepart.plots import plot_timeline

    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.45 * len(plan.stages)))
    plot_timeline(inst, plan, ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem on a line of its own (exit 2), or a summary of the valid instance."""
    try:
        inst = load_instance(args.instance)
    except InputError as err:
        for problem in err.problems:
            sys.stderr.write(f"edgepart: {problem}\n")
        return EXIT_BAD_INPUT
    g = inst.model
    summary = {"instance": inst.name, "layers": len(g.layers), "edges": len(g.edges),
               "graph": "chain" if g.is_chain else "DAG", "devices": len(inst.devices),
               "classes": sorted({d.cls for d in inst.devices}),
               "cost_model": {"overlap": inst.cost_model.overlap,
                              "transfer": inst.cost_model.transfer.value},
               "source": inst.source, "sink": inst.sink,
               "period_lower_bound_s": quick_bound(inst)}
    if args.json:
        print_json({"valid": True, **summary})
    else:
        print(f"{args.instance}: valid")
        for key, value in summary.items():
            print(f"  {key}: {value}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    inst = load_instance(args.instance)
    plan = load_plan(args.plan)
    problems = validate_plan(inst, plan)
    if problems:
        raise InputError([f"{args.plan}: {p}" for p in problems])
    metrics = evaluate(inst, plan)
    if args.json:
        print_json({"instance": inst.name, "bottleneck_s": metrics.bottleneck_s,
                    "latency_s": metrics.latency_s, "throughput_per_s": metrics.throughput_per_s,
                    "stages": [s.to_dict() for s in metrics.stages],
                    **_llm_json(inst, metrics)})
    else:
        print(stage_table(inst, metrics))
        _print_metrics(metrics, inst)
    return EXIT_OK


def stage_table(inst: Instance, metrics: Metrics) -> str:
    """The plan as a table people can read (times in ms, memory in MB of the device's)."""
    head = (f"{'stage':>5}  {'device':<14} {'class':<16} {'layers':>6}  {'first .. last':<34}"
            f"{'compute':>9} {'in':>8} {'out':>8} {'stage':>9}  {'memory MB':>17}")
    lines = [head, "-" * len(head)]
    for b, s in enumerate(metrics.stages):
        dev = inst.devices[inst.device_index[s.device]]
        span = f"{s.layers[0]} .. {s.layers[-1]}" if len(s.layers) > 1 else s.layers[0]
        device = f"{s.device}+{len(s.devices) - 1}" if len(s.devices) > 1 else s.device
        lines.append(
            f"{b:>5}  {device:<14.14} {dev.cls:<16.16} {len(s.layers):>6}  {span:<34.34}"
            f"{s.compute_s * 1e3:>9.3f} {s.recv_s * 1e3:>8.3f} {s.send_s * 1e3:>8.3f}"
            f" {s.time_s * 1e3:>9.3f}  {s.memory_bytes / 1e6:>7.1f}"
            f" / {dev.memory_bytes / 1e6:<7.0f}")
    lines.append("(times in ms per request; 'in'/'out' = receive/send transfer time)")
    lines.extend(f"(stage {b}: {s.mode} over {', '.join(s.devices)})"
                 for b, s in enumerate(metrics.stages) if len(s.devices) > 1)
    return "\n".join(lines)


def _print_metrics(metrics: Metrics, inst: Instance) -> None:
    print(f"bottleneck (period): {metrics.bottleneck_s * 1e3:.4f} ms   "
          f"throughput: {metrics.throughput_per_s:.3f} req/s   "
          f"latency: {metrics.latency_s * 1e3:.4f} ms")
    llm_line = rates_line(inst, metrics)  # tokens/s and time to first token of an LLM workload
    if llm_line is not None:
        print(llm_line)


def _llm_json(inst: Instance, metrics: Metrics | None) -> dict[str, Any]:
    """``{"llm": rates}`` for an instance with a language-model workload, else nothing."""
    rates = None if metrics is None else llm_rates(inst, metrics)
    return {} if rates is None else {"llm": rates.to_dict()}


def _print_result(inst: Instance, result: SolveResult) -> None:
    if result.metrics is not None:
        print(stage_table(inst, result.metrics))
        _print_metrics(result.metrics, inst)
    bound = "none" if not math.isfinite(result.bound_s) else f"{result.bound_s * 1e3:.4f} ms"
    print(f"method: {result.method}   status: {result.status}   "
          f"termination: {result.termination}   time: {result.wall_time_s:.2f} s")
    if result.has_plan:
        print(f"objective ({result.objective}): {result.objective_s * 1e3:.4f} ms   "
              f"bound: {bound}   gap: {result.gap * 100:.4f} %")
    if "formulation" in result.extra:
        print(_formulation_line(result.extra))
    if result.message:
        print(f"note: {result.message}")


def _formulation_line(extra: dict[str, Any]) -> str:
    line = f"formulation: {extra['formulation']}"
    if "backend" in extra:
        line = f"backend: {extra['backend']}   {line}"
    if "feasibility_solves" in extra:
        line += (f" ({extra['stage_arcs']} stage arcs, {extra['feasibility_solves']} "
                 f"feasibility solves)")
    if "paths_not_used" in extra:
        line += f" (paths not used: {extra['paths_not_used']})"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except InputError as err:
        sys.stderr.write(f"edgepart: {err}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("edgepart: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def console() -> None:
    """The ``edgepart`` program: :func:`main`, then the process's end. After a run whose RPC
    shutdown never ended (``edgepart.runtime.transport.shutdown_stuck``) the interpreter's own
    exit would wait for it, so the process ends at once, its output flushed."""
    code = main()
    transport = sys.modules.get("edgepart.runtime.transport")
    if transport is not None and transport.shutdown_stuck():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    console()
