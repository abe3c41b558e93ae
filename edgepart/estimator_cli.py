"""``edgepart estimator fit|evaluate`` and ``edgepart merge-profiles`` (parsing and printing only;
the logic is :mod:`edgepart.profiling.estimator` and :func:`edgepart.profiling.measure.
merge_profiles`).

    edgepart estimator fit TRACE.json... --out EST.json [--rounds N] [--json]
    edgepart estimator evaluate EST.json TRACE.json... [--json]
    edgepart merge-profiles A.json B.json... --out MERGED.json

Traces come from ``edgepart profile MODEL --cluster C --measure-on CLASS=cgroup:CPUS --trace-dir
DIR``; an estimator fills the classes a profile did not measure (``edgepart profile ...
--time-model EST.json``). docs/profiling.md has the formats.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from edgepart.cli_common import EXIT_OK, print_json
from edgepart.errors import InputError
from edgepart.files import write_json

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``estimator`` (``fit``, ``evaluate``) and ``merge-profiles``."""
    p = subparsers.add_parser("estimator", help="learned layer-time estimator (FlexPie's CE)")
    sub = p.add_subparsers(dest="estimator_command", required=True)
    fit = sub.add_parser("fit", help="fit an estimator to measured traces")
    fit.add_argument("traces", nargs="+", metavar="TRACE.json")
    fit.add_argument("--out", required=True, metavar="EST.json")
    fit.add_argument("--rounds", type=int, default=None, help="boosting rounds (default 600)")
    fit.add_argument("--reference", metavar="CLASS", default=None,
                     help="reference mode: learn what the speed factor from each layer's time "
                          "on CLASS (this host's traces) misses; predictions then need this "
                          "host's times (profile measures them)")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.set_defaults(handler=_fit)
    ev = sub.add_parser("evaluate", help="an estimator's error on measured traces")
    ev.add_argument("estimator", metavar="EST.json")
    ev.add_argument("traces", nargs="+", metavar="TRACE.json")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(handler=_evaluate)
    merge = subparsers.add_parser(
        "merge-profiles", help="join instances of one model profiled in several runs or hosts")
    merge.add_argument("instances", nargs="+", metavar="INSTANCE.json")
    merge.add_argument("--out", required=True, metavar="MERGED.json")
    merge.set_defaults(handler=_merge)


def _fit(args: argparse.Namespace) -> int:
    from edgepart.profiling.estimator import DEFAULT_ROUNDS, fit, load_trace

    rounds = DEFAULT_ROUNDS if args.rounds is None else args.rounds
    if rounds < 1:
        raise InputError(f"--rounds: must be >= 1, got {rounds}")
    traces = [load_trace(path) for path in args.traces]
    est = fit(traces, rounds=rounds, reference_class=args.reference)
    write_json(est.to_json(), args.out)
    summary = {"out": args.out, **est.trained_on}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {args.out}: {summary['layers']} layers of {len(summary['models'])} models "
              f"on {len(summary['classes'])} classes, {rounds} rounds")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from edgepart.profiling.estimator import load_estimator, load_trace, reference_times

    est = load_estimator(args.estimator)
    traces = {path: load_trace(path) for path in args.traces}
    rows = []
    for path, trace in traces.items():
        if est.reference is not None and trace.device_class == est.reference.device_class:
            continue  # the reference itself: the times predictions start from
        predicted = est.predict(trace.layers, trace.device,
                                reference_times(est.reference, trace, traces.values()))
        errors = [abs(p - layer["time_s"]) / layer["time_s"]
                  for p, layer in zip(predicted, trace.layers, strict=True)]
        measured_sum = sum(layer["time_s"] for layer in trace.layers)
        absolute = sum(abs(p - layer["time_s"])
                       for p, layer in zip(predicted, trace.layers, strict=True))
        rows.append({"trace": path, "model": trace.model, "class": trace.device_class,
                     "layers": len(errors), "mape_%": round(100 * statistics.fmean(errors), 2),
                     "within_10_%": round(100 * sum(e <= 0.1 for e in errors) / len(errors), 1),
                     "time_weighted_%": round(100 * absolute / measured_sum, 2),
                     "sum_error_%": round(100 * (sum(predicted) - measured_sum)
                                          / measured_sum, 2)})
    if args.json:
        print_json({"estimator": args.estimator, "traces": rows})
    else:
        for r in rows:
            print(f"{r['model']} on {r['class']}: {r['layers']} layers, MAPE {r['mape_%']}%, "
                  f"{r['within_10_%']}% within +-10%, time-weighted {r['time_weighted_%']}%, "
                  f"sum of layers {r['sum_error_%']:+}%")
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    from edgepart.files import read_json
    from edgepart.instance import load_instance
    from edgepart.profiling.measure import merge_profiles

    merged = merge_profiles([read_json(path) for path in args.instances])
    load_instance(merged)
    write_json(merged, args.out)
    sources = merged["model"]["layers"][0]["meta"]["time_source"]
    print(f"wrote {args.out}: {len(args.instances)} profiles, classes "
          + ", ".join(f"{c} ({s})" for c, s in sorted(sources.items())))
    return EXIT_OK
