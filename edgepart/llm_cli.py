"""``edgepart llm configs|rates|table`` and ``edgepart run --generate``: language-model helpers
(parsing and printing only; the logic is in :mod:`edgepart.llm` and
:mod:`edgepart.runtime.generate`). Profiling a model is ``edgepart profile hf:NAME``."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from edgepart.cli_common import EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.errors import InputError

if TYPE_CHECKING:
    from edgepart.instance import Instance
    from edgepart.plan import Plan

__all__ = ["add_generation_arguments", "register", "run_generation"]


def register(subparsers: Any) -> None:
    """Add the ``llm`` sub-command."""
    p = subparsers.add_parser("llm", help="language models: shipped configs, tokens/s of a "
                              "plan, baselines vs the optimum (docs/llm.md)")
    sub = p.add_subparsers(dest="llm_command", required=True)
    configs = sub.add_parser("configs", help="the shipped model configs and their sources")
    configs.add_argument("--json", action="store_true", help="print one JSON object")
    configs.set_defaults(handler=_configs)
    rates = sub.add_parser("rates", help="tokens/s and time to first token of a plan")
    rates.add_argument("instance")
    rates.add_argument("plan")
    rates.add_argument("--json", action="store_true", help="print one JSON object")
    rates.set_defaults(handler=_rates)
    table = sub.add_parser("table", help="the optimum next to exo, llama.cpp and memory-first "
                           "splits in tokens/s, and whether they fit")
    table.add_argument("instances", nargs="+")
    table.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                       help="seconds per method (default 60)")
    table.add_argument("--markdown", action="store_true", help="a Markdown table")
    table.add_argument("--json", action="store_true", help="print one JSON array")
    table.set_defaults(handler=_table)


def _configs(args: argparse.Namespace) -> int:
    from edgepart.llm.configs import SHIPPED, DecoderShape
    from edgepart.llm.costs import distinct_params, kv_bytes_per_token

    rows: list[dict[str, Any]] = []
    for name, shipped in SHIPPED.items():
        s = DecoderShape.from_config(shipped.config, name)
        rows.append({"name": name, "architecture": s.architecture,
                     "parameters": distinct_params(s), "layers": s.layers, "hidden": s.hidden,
                     "heads": s.heads, "kv_heads": s.kv_heads, "tied_embeddings": s.tied,
                     "kv_bytes_per_token_fp16": kv_bytes_per_token(s, "fp16") * s.layers,
                     "source": shipped.source})
    if args.json:
        print_json({"configs": rows})
        return EXIT_OK
    for r in rows:
        print(f"{r['name']:<14} {r['architecture']:<18} {r['parameters'] / 1e9:6.2f} B params  "
              f"{r['layers']:>3} layers  KV {r['kv_bytes_per_token_fp16'] / 1024:7.1f} KiB/token "
              f"(fp16){'  tied' if r['tied_embeddings'] else ''}")
    return EXIT_OK


def _rates(args: argparse.Namespace) -> int:
    from edgepart.cost import evaluate
    from edgepart.llm.rates import llm_rates, rates_line

    inst, plan = _instance_and_plan(args)
    metrics = evaluate(inst, plan)
    rates = llm_rates(inst, metrics)
    if rates is None:
        raise InputError(f"{args.instance}: no llm workload (make it with edgepart profile hf:)")
    if args.json:
        print_json({"instance": inst.name, **rates.to_dict()})
    else:
        print(rates_line(inst, metrics))
    return EXIT_OK


def _instance_and_plan(args: argparse.Namespace) -> tuple[Instance, Plan]:
    """The instance and a plan valid for it (else the plan's first problem as bad input)."""
    from edgepart.cost import validate_plan
    from edgepart.instance import load_instance
    from edgepart.plan import load_plan

    inst, plan = load_instance(args.instance), load_plan(args.plan)
    problems = validate_plan(inst, plan)
    if problems:
        raise InputError(f"{args.plan}: {problems[0]}")
    return inst, plan


def _table(args: argparse.Namespace) -> int:
    from edgepart.llm.baselines import baseline_table, markdown_table

    frame = baseline_table(args.instances, time_limit=args.time_limit)
    if args.json:
        print_json(frame.to_dict(orient="records"))
    elif args.markdown:
        print(markdown_table(frame.drop(columns=["note"])))
    else:
        print(frame.drop(columns=["note"]).to_string(
            index=False, float_format=lambda x: "" if math.isnan(x) else f"{x:.4g}"))
        for row in frame.itertuples():
            if row.note and not row.fits:
                print(f"  {row.instance} {row.method}: {row.note}")
    return EXIT_OK if frame["fits"].any() else EXIT_NO_PLAN


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """``edgepart run``'s options for a language model (``--model hf:ARCH --generate N``)."""
    g = p.add_argument_group("language models (--model hf:ARCH, docs/llm.md)")
    g.add_argument("--generate", type=int, default=None, metavar="N",
                   help="generate N greedy tokens per sequence through the pipeline")
    g.add_argument("--config", default=None, metavar="CONFIG.json",
                   help="the model's config (default: the shipped config hf:NAME)")
    g.add_argument("--prompt-tokens", type=int, default=None, metavar="P",
                   help="prompt length (default: the instance's)")
    g.add_argument("--sequences", type=int, default=None, metavar="S",
                   help="sequences in flight (default: the instance's batch)")
    g.add_argument("--prefill-instance", default=None, metavar="FILE",
                   help="a prefill instance of the same model and cluster: pads prefill and "
                        "predicts the time to first token")
    g.add_argument("--in-process", action="store_true",
                   help="run every stage in this process (no workers)")
    g.add_argument("--no-check", action="store_true",
                   help="skip the comparison with single-process generate()")


REFUSED_WITH_GENERATE = (("adapt", "--adapt"), ("slowdown", "--slowdown"),
                         ("timeline", "--timeline"), ("weights", "--weights"),
                         ("input_shape", "--input-shape"))


def run_generation(args: argparse.Namespace) -> int:
    """``edgepart run ... --model hf:ARCH --generate N``: pipelined generation, measured against
    the prediction (:func:`edgepart.runtime.generate.generation_report`)."""
    from edgepart.instance import load_instance
    from edgepart.runtime.cli import parse_time_scale, report_run  # it imports this module
    from edgepart.runtime.cluster import WorkerError
    from edgepart.runtime.generate import GenerationError, GenerationOptions, generation_report
    from edgepart.runtime.transport import parse_address

    inst, plan = _instance_and_plan(args)
    _check_generation_flags(args, inst)
    w = inst.workload
    options = GenerationOptions(
        new_tokens=args.generate, sequences=args.sequences or (w.batch if w else 1),
        prompt_tokens=args.prompt_tokens or (w.prompt_tokens if w else 1),
        emulate=args.emulate == "pad", processes=not args.in_process, check=not args.no_check,
        seed=args.seed,
        prefill=load_instance(args.prefill_instance) if args.prefill_instance else None,
        fail=(args.fail_stage, args.fail_after or 0, args.fail_hang)
        if args.fail_stage is not None else None,
        master=parse_address(args.master) if args.master else None,
        heartbeat_timeout_s=args.heartbeat_timeout,
        time_scale=parse_time_scale(args.time_scale, auto=False))
    return report_run(args, lambda: generation_report(inst, plan, options),
                      (GenerationError, WorkerError), _print_generation,
                      lambda report: bool(report.get("tokens_equal_generate", True)))


def _check_generation_flags(args: argparse.Namespace, inst: Instance) -> None:
    """``--model`` must name the instance's model; runtime options generation has not."""
    from edgepart.llm.configs import resolve_config

    if not args.model.startswith("hf:"):
        raise InputError(f"--model: --generate runs a language model (hf:ARCH), got "
                         f"{args.model!r}")
    shape = resolve_config(args.model, args.config)
    if dict(shape.config) != dict(inst.meta.get("config") or {}):
        raise InputError(f"--model: {args.model}{' --config ' + args.config if args.config else ''}"
                         f" is not {inst.name}'s model (its meta.config differs)")
    if args.emulate == "cgroup":
        raise InputError("--emulate: --generate supports none and pad, got cgroup")
    for name, flag in REFUSED_WITH_GENERATE:
        if getattr(args, name):
            raise InputError(f"{flag}: not supported with --generate")
    if (args.fail_stage is None) != (args.fail_after is None):
        raise InputError("--fail-stage and --fail-after: give both or neither")


def _print_generation(report: dict[str, Any]) -> None:
    def versus(key: str, scale: float = 1.0) -> str:
        predicted = report.get(f"predicted_{key}")
        measured = report[key] * scale
        if predicted is None:
            return f"{measured:.2f}"
        return (f"{measured:.2f} (predicted {predicted * scale:.2f}, "
                f"{100 * (report[key] / predicted - 1):+.1f}%)")

    print(f"{report['sequences']} sequence(s) {report['where']}, {report['new_tokens']} tokens "
          f"each, emulate {report['emulate']} (time scale {report['time_scale']:g}; times in "
          "the instance's time)")
    print(f"decode tokens/s: {versus('tokens_per_s')}")
    print(f"time to first token ms, all sequences: {versus('time_to_first_token_s', 1e3)}; "
          f"first sequence: {versus('first_sequence_first_token_s', 1e3)}")
    if "tokens_equal_generate" in report:
        print("tokens equal single-process generate(): "
              + ("yes" if report["tokens_equal_generate"] else "NO"))
    for st in report["stages"]:
        print(f"  {st['device']:<12} parameters {st['param_bytes'] / 1e6:9.3f} MB "
              f"(predicted {st['predicted_param_bytes'] / 1e6:.3f})  KV cache "
              f"{st['kv_cache_bytes'] / 1e6:9.3f} MB (predicted "
              f"{st['predicted_kv_cache_bytes'] / 1e6:.3f})")
