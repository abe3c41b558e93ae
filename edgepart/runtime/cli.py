"""``edgepart run`` and ``edgepart worker``: argument parsing and printing only.

torch is imported only when a command runs, so the core CLI starts without it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, Literal, overload

from edgepart.cli_common import EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.errors import InputError
from edgepart.llm_cli import add_generation_arguments, run_generation

__all__ = ["parse_slowdown", "parse_time_scale", "register", "report_run"]


def register(subparsers: Any) -> None:
    """Add ``run`` and ``worker`` to the top-level CLI."""
    _add_run(subparsers)
    _add_worker(subparsers)


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run a plan on workers (local processes or machines)")
    p.add_argument("instance")
    p.add_argument("plan", help="PLAN.json (from edgepart solve --out)")
    p.add_argument("--model", required=True,
                   help="torchvision:NAME, package.module:factory, or hf:ARCH with --generate")
    p.add_argument("--requests", type=int, default=20, metavar="N", help="default 20")
    p.add_argument("--inflight", default="auto", metavar="K|auto",
                   help="requests unanswered at most (default auto: enough to fill the "
                        "pipeline twice over, 2 x predicted latency / period + 1)")
    p.add_argument("--emulate", choices=["none", "pad", "cgroup", "stretch"], default="none",
                   help="emulate the instance's devices: pad compute, cgroup CPU/memory limits, "
                        "or stretch (idle after compute to each device's meta.cpus share)")
    p.add_argument("--time-scale", default="1", metavar="X|auto",
                   help="multiply every emulated time (default 1; auto: the least that fits)")
    p.add_argument("--master", default=None, metavar="HOST:PORT",
                   help="serve remote workers here (default: spawn local workers on 127.0.0.1)")
    p.add_argument("--fail-stage", type=int, default=None, metavar="K",
                   help="kill stage K's worker (0-based; a replicated stage: its first "
                        "replica; a split stage: its last helper, which exercises the split "
                        "recovery, since the lead's death is that of any one-device stage) ...")
    p.add_argument("--fail-after", type=int, default=None, metavar="N",
                   help="... after it has processed N requests")
    p.add_argument("--fail-hang", action="store_true",
                   help="... by stopping it (SIGSTOP: alive but silent) instead of killing it")
    p.add_argument("--heartbeat-timeout", type=float, default=10.0, metavar="S",
                   help="a worker silent for S seconds counts as dead (default 10)")
    p.add_argument("--adapt", action="store_true", help="re-plan when a device slows down")
    p.add_argument("--slowdown", action="append", default=[], metavar="DEVICE:FACTOR@REQUEST",
                   help="make DEVICE FACTOR times slower from request REQUEST on (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random weights and inputs (default 0)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="state dict to load (torch.load with weights_only=True)")
    p.add_argument("--input-shape", default=None, metavar="1,3,224,224",
                   help="default: the instance's meta.input_shape")
    p.add_argument("--replan-time-limit", type=float, default=10.0, metavar="S")
    p.add_argument("--timeline", default=None, metavar="FILE.png",
                   help="draw measured stage activity against the predicted schedule")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_generation_arguments(p)
    p.set_defaults(handler=cmd_run)


def _add_worker(subparsers: Any) -> None:
    p = subparsers.add_parser("worker", help="serve as one device's worker for edgepart run")
    p.add_argument("--rank", type=int, required=True,
                   help="1 + the device's index in the instance")
    p.add_argument("--world", type=int, required=True, help="1 + number of devices")
    p.add_argument("--master", required=True, metavar="HOST:PORT", help="the driver's address")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="listen on this address (default: the one that routes to the master)")
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                   help="exit after S seconds without word from the driver (default 30)")
    p.add_argument("--connect-timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cgroup", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_worker)


def parse_slowdown(text: str) -> tuple[str, float, int]:
    """``DEVICE:FACTOR@REQUEST`` -> (device, factor, request)."""
    device, _, rest = text.rpartition(":")
    factor, _, request = rest.partition("@")
    try:
        value, first = float(factor), int(request)
    except ValueError:
        value, first = math.nan, -1
    if not device or not value > 0 or first < 0:
        raise InputError(f"--slowdown: expected DEVICE:FACTOR@REQUEST (e.g. pi-3:2.5@40), "
                         f"got {text!r}")
    return device, value, first


@overload
def parse_time_scale(text: str, auto: Literal[True] = ...) -> float | None: ...


@overload
def parse_time_scale(text: str, auto: Literal[False]) -> float: ...


def parse_time_scale(text: str, auto: bool = True) -> float | None:
    """``--time-scale X|auto`` -> X, or None for ``auto`` (the least that fits) where ``auto``
    is allowed (not with ``--generate``, whose emulation has no such search)."""
    if auto and text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        expected = "a number or 'auto'" if auto else "a number with --generate"
        raise InputError(f"--time-scale: expected {expected}, got {text!r}") from None


def _inflight(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise InputError(f"--inflight: expected a number or 'auto', got {text!r}")
    return int(text)


def cmd_run(args: argparse.Namespace) -> int:
    if args.generate is not None:  # a language model: pipelined generation (docs/llm.md)
        return run_generation(args)
    from edgepart.instance import load_instance
    from edgepart.plan import load_plan
    from edgepart.profiling.model_spec import parse_input_shape
    from edgepart.runtime.cluster import WorkerError
    from edgepart.runtime.driver import run
    from edgepart.runtime.emulate import Mode
    from edgepart.runtime.prepare import RunOptions, Slowdown
    from edgepart.runtime.replan import NoPlanError
    from edgepart.runtime.transport import parse_address

    inst = load_instance(args.instance)
    plan = load_plan(args.plan)
    options = RunOptions(
        model=args.model, requests=args.requests, inflight=_inflight(args.inflight),
        emulate=Mode(args.emulate), time_scale=parse_time_scale(args.time_scale),
        master=parse_address(args.master) if args.master else None,
        fail_stage=args.fail_stage, fail_after=args.fail_after, fail_hang=args.fail_hang,
        heartbeat_timeout_s=args.heartbeat_timeout, adapt=args.adapt,
        slowdowns=tuple(Slowdown(*parse_slowdown(s)) for s in args.slowdown),
        seed=args.seed, weights=args.weights,
        input_shape=parse_input_shape(args.input_shape) if args.input_shape else None,
        replan_time_limit_s=args.replan_time_limit, timeline=args.timeline)
    return report_run(args, lambda: run(inst, plan, options), (WorkerError, NoPlanError),
                      _print_report, _answered_all)


Report = dict[str, Any]


def report_run(args: argparse.Namespace, produce: Callable[[], Report],
               failures: tuple[type[Exception], ...], print_text: Callable[[Report], None],
               succeeded: Callable[[Report], bool]) -> int:
    """The end of ``edgepart run`` (with or without ``--generate``): ``produce`` the report,
    print it (one JSON object with ``--json``, else ``print_text``) and its warnings on
    standard error. Exit 1 when the run raised one of ``failures`` (its message on standard
    error) or did not succeed, else 0."""
    try:
        report = produce()
    except failures as err:
        sys.stderr.write(f"edgepart run: {err}\n")
        return EXIT_NO_PLAN
    if args.json:
        print_json(report)
    else:
        print_text(report)
    for warning in report.get("warnings", ()):
        sys.stderr.write(f"edgepart run: warning: {warning}\n")
    return EXIT_OK if succeeded(report) else EXIT_NO_PLAN


def _answered_all(report: Report) -> bool:
    """Every request answered, every answer equal to the single-process model's."""
    return bool(report["completed"] == report["requests"] and report["mismatches"] == 0)


def _print_report(r: dict[str, Any]) -> None:
    head = (f"{'stage':>5}  {'device':<16} {'layers':>6} {'compute ms':>11} {'predicted':>10}"
            f" {'transfer ms':>12} {'predicted':>10} {'idle ms':>8}")
    print(head)
    print("-" * len(head))
    for s in r["stages"]:
        where = s["device"]  # a group: its lead (first device), how many more, its mode
        if "mode" in s:
            where += f"+{len(s['devices']) - 1} {s['mode']}"
        print(f"{s['stage']:>5}  {where:<16.16} {s['layers']:>6}"
              f" {s['compute_s'] * 1e3:>11.2f} {s['predicted_compute_s'] * 1e3:>10.2f}"
              f" {s['transfer_s'] * 1e3:>12.2f}"
              f" {s['predicted_transfer_s'] * 1e3:>10.2f} {s['idle_s'] * 1e3:>8.2f}")
    print(f"answered {r['completed']}/{r['requests']}, mismatches {r['mismatches']}, "
          f"emulate {r['emulate']} (time scale {r['time_scale']:g})")
    print(f"throughput {r['throughput_per_s']:.3f}/s (predicted "
          f"{r['predicted_throughput_per_s']:.3f}/s, best single device "
          f"{r['single_device_throughput_per_s']:.3f}/s)")
    print(f"latency p50 {r['latency_p50_s'] * 1e3:.1f} ms, p95 {r['latency_p95_s'] * 1e3:.1f} ms "
          f"(predicted {r['predicted_latency_s'] * 1e3:.1f} ms, empty pipeline)")
    if r["failures"]:
        print(f"failures {r['failures']}, replans {r['replans']}, "
              f"recovery {r['recovery_s']:.2f} s")
    for f in r["failure_events"]:
        print(_failure_line(f))
    if r.get("timeline"):
        print(f"timeline: {r['timeline']['path']}")
    for a in r["adaptations"]:
        print(f"adapted to {a['device']} x{a['factor']:.2f}: switched={a['switched']}, "
              f"throughput {a['throughput_before_per_s']:.3f}/s -> "
              f"{a['throughput_after_per_s']:.3f}/s")


def _failure_line(f: dict[str, Any]) -> str:
    """One lost device: how it was noticed, the quick plan, the exact one."""
    line = f"lost {f['device']} ({f['message']})"
    if f.get("replan_method") is None:
        return line + ": it ran no stage"
    recovery = "no answer pending" if f["recovery_s"] is None else (
        f"first answer {f['recovery_s']:.2f} s after the notice")
    line += (f": {f['replan_method']} plan in {f['replan_s'] * 1e3:.1f} ms (period "
             f"{f['replan_period_s'] * 1e3:.2f} ms), {recovery}")
    exact = f.get("exact")
    if exact is None:
        return line + "; exact re-plan still running at the end"
    if not exact["switched"]:
        return line + f"; exact ({exact['status']}) found nothing better"
    return line + (f"; exact plan ({exact['status']}, period {exact['period_s'] * 1e3:.2f} ms) "
                   f"deployed {f['exact_switch_s']:.2f} s after the notice")


def cmd_worker(args: argparse.Namespace) -> int:
    from edgepart.runtime.transport import parse_address
    from edgepart.runtime.worker import serve

    return serve(args.rank, args.world, parse_address(args.master), args.bind,
                 cgroups=args.cgroup, parent_pid=args.parent_pid,
                 idle_timeout_s=args.idle_timeout, connect_timeout_s=args.connect_timeout)

