"""``edgepart llm configs|rates|table``: language-model helpers (parsing and printing only; the
logic is in :mod:`edgepart.llm`). Profiling a model is ``edgepart profile hf:NAME``."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from edgepart.cli_common import EXIT_NO_PLAN, EXIT_OK, print_json
from edgepart.errors import InputError

if TYPE_CHECKING:
    from edgepart.instance import Instance
    from edgepart.plan import Plan

__all__ = ["register"]


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
    gen = sub.add_parser("generate", help="run pipelined greedy generation of the instance's "
                         "model on a plan (one worker process per device) and compare with "
                         "the prediction")
    gen.add_argument("instance")
    gen.add_argument("plan")
    gen.add_argument("--generate", type=int, default=16, metavar="N", help="new tokens (16)")
    gen.add_argument("--sequences", type=int, default=None, metavar="S",
                     help="sequences in flight (default: the instance's batch)")
    gen.add_argument("--prompt-tokens", type=int, default=None, metavar="P",
                     help="prompt length (default: the instance's)")
    gen.add_argument("--emulate", choices=("none", "pad"), default="none",
                     help="pad: pad each stage to its predicted time and wait predicted "
                          "transfers")
    gen.add_argument("--in-process", action="store_true",
                     help="run every stage in this process (no workers)")
    gen.add_argument("--no-check", action="store_true",
                     help="skip the comparison with single-process generate()")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(handler=_generate)


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


def _generate(args: argparse.Namespace) -> int:
    from edgepart.runtime.generate import generation_report

    inst, plan = _instance_and_plan(args)
    w = inst.workload
    report = generation_report(
        inst, plan, new_tokens=args.generate,
        sequences=args.sequences or (w.batch if w else 1),
        prompt_tokens=args.prompt_tokens or (w.prompt_tokens if w else 1),
        emulate=args.emulate == "pad", processes=not args.in_process,
        check=not args.no_check, seed=args.seed)
    if args.json:
        print_json(report)
        return EXIT_OK
    line = (f"{report['sequences']} sequence(s), {report['new_tokens']} tokens each: "
            f"{report['tokens_per_s']:.2f} tokens/s decoding")
    if "predicted_tokens_per_s" in report:
        line += f" (predicted {report['predicted_tokens_per_s']:.2f})"
    print(line + f", first token after {report['time_to_first_token_s'] * 1e3:.1f} ms")
    if "tokens_equal_generate" in report:
        print("tokens equal single-process generate(): "
              + ("yes" if report["tokens_equal_generate"] else "NO"))
    for st in report["stages"]:
        print(f"  {st['device']:<12} parameters {st['param_bytes'] / 1e6:9.3f} MB "
              f"(predicted {st['predicted_param_bytes'] / 1e6:.3f})  KV cache "
              f"{st['kv_cache_bytes'] / 1e6:9.3f} MB (predicted "
              f"{st['predicted_kv_cache_bytes'] / 1e6:.3f})")
    return EXIT_OK if report.get("tokens_equal_generate", True) else EXIT_NO_PLAN
