"""Command line for profiling: ``profile``, ``devices probe|list`` and ``cluster``.

Argument parsing and printing only; the work is in :mod:`edgepart.profiling.profile`,
:mod:`~edgepart.profiling.probe` and :mod:`~edgepart.profiling.clusters`. torch is imported only
when a command that needs it runs. Conventions: ``edgepart/cli_common.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgepart.cli_common import EXIT_OK, print_json
from edgepart.errors import InputError
from edgepart.files import write_json

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``profile``, ``devices`` and ``cluster`` to the top-level CLI."""
    _add_profile(subparsers)
    _add_devices(subparsers)
    _add_cluster(subparsers)


def _add_profile(subparsers: Any) -> None:
    p = subparsers.add_parser("profile", help="profile a model on a cluster into an instance")
    p.add_argument("model", help="torchvision:NAME, package.module:factory, or hf:NAME")
    p.add_argument("--cluster", required=True, help="cluster JSON (docs/profiling.md)")
    p.add_argument("--out", required=True, help="instance JSON to write")
    p.add_argument("--input-shape", default="1,3,224,224", help="default: 1,3,224,224")
    p.add_argument("--batch-size", type=int, default=None,
                   help="replaces the first dimension of --input-shape")
    p.add_argument("--granularity", default="module", help="module (default) or block")
    p.add_argument("--repeats", type=int, default=10, help="timed passes (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed passes first (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads while timing (default 1: stable on a shared host; the "
                        "catalog's reference FLOP/s are single-threaded too)")
    p.add_argument("--statistic", default="median",
                   help="median (default) or min of the repeats: min is the uncontended time "
                        "on a machine that other programs share")
    p.add_argument("--time-model", default="measured",
                   help="measured (host time x speed factor, default), roofline, or EST.json: "
                        "a fitted estimator (edgepart estimator fit) fills every class that "
                        "--measure-on does not measure")
    p.add_argument("--measure-on", action="append", default=[],
                   metavar="[CLASS=]cgroup:CPUS[,MEM]|stretch:CPUS|this-host",
                   help="measure CLASS's layer times on this host, under a real CPU quota (and "
                        "memory limit), as a uniformly slower CPU (thread CPU time / CPUS, as "
                        "run --emulate stretch) or as it is (repeatable; docs/profiling.md)")
    p.add_argument("--trace-dir", default=None, metavar="DIR",
                   help="write one trace per measured class there (for the estimator)")
    p.add_argument("--host-flops", default=None,
                   help="this host's FLOP/s for the speed factors: a number, or 'measure' to "
                        "run the probe benchmark (default: the catalog's reference host)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model factory (Python literal), repeatable")
    p.add_argument("--name", default=None, help="instance name (default: the --out file stem)")
    _add_llm_options(p)
    p.set_defaults(handler=_profile)


def _add_llm_options(p: Any) -> None:
    llm = p.add_argument_group("language models (MODEL = hf:NAME or hf:ARCH --config FILE; "
                               "docs/llm.md); --batch-size is the resident sequences B; "
                               "--time-model measured times fp32 models up to 2e8 parameters "
                               "on this host, others get roofline times")
    llm.add_argument("--config", default=None, metavar="CONFIG.json",
                     help="Hugging Face config.json of the model (default: the shipped NAME)")
    llm.add_argument("--dtype", default="fp16", help="fp32, fp16, bf16, int8 or int4 weights")
    llm.add_argument("--phase", default="decode", help="decode (default) or prefill")
    llm.add_argument("--prompt-tokens", type=int, default=512, metavar="P",
                     help="prompt length (default 512)")
    llm.add_argument("--context-tokens", type=int, default=2048, metavar="C",
                     help="KV-cache length each sequence holds (default 2048)")


def _add_devices(subparsers: Any) -> None:
    p = subparsers.add_parser("devices", help="device catalog and probing this machine")
    sub = p.add_subparsers(dest="devices_command", required=True)
    probe = sub.add_parser("probe", help="this machine as a device class, the runtime's "
                           "per-message cost and the idle cost here (JSON)")
    probe.add_argument("--repeats", type=int, default=20, help="benchmark repeats (default 20)")
    probe.add_argument("--no-rpc", action="store_true",
                       help="skip the per-message RPC cost (it starts one local worker process)")
    probe.add_argument("--no-idle", action="store_true",
                       help="skip the idle cost (a small stage's CPU time after idling, ~2 s)")
    probe.set_defaults(handler=_probe)
    listing = sub.add_parser("list", help="the catalog's device classes (JSON)")
    listing.set_defaults(handler=_list)


def _add_cluster(subparsers: Any) -> None:
    p = subparsers.add_parser("cluster", help="generate a cluster JSON with explicit links")
    p.add_argument("kind", choices=("ethernet", "wireless", "mixed"))
    p.add_argument("--devices", required=True,
                   help="CLASS:COUNT[@TIER],... e.g. rpi4:4,nuc_cpu:1@wired")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.add_argument("--name", default=None)
    p.add_argument("--seed", type=int, default=None, help="wireless: placement seed")
    p.add_argument("--param", action="append", default=[], metavar="KEY=NUMBER",
                   help="generator parameter, e.g. bandwidth_mbit_s=500 (docs/profiling.md)")
    p.add_argument("--source", default=None, help="source device id ('first': the first device)")
    p.add_argument("--sink", default=None, help="sink device id ('first': the first device)")
    p.set_defaults(handler=_cluster)


def _profile(args: argparse.Namespace) -> int:
    if args.model.startswith("hf:"):
        return _profile_llm(args)
    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.model_spec import parse_input_shape, parse_model_args
    from edgepart.profiling.profile import ProfileOptions, profile_instance

    cluster = load_cluster(args.cluster)
    options = ProfileOptions(
        input_shape=parse_input_shape(args.input_shape, args.batch_size),
        granularity=args.granularity, repeats=args.repeats, warmup=args.warmup,
        time_model=args.time_model, threads=args.threads, statistic=args.statistic,
        host_flops_per_s=_host_flops(args.host_flops, args.threads),
        model_kwargs=parse_model_args(args.model_arg),
        name=args.name or Path(args.out).stem,
    )
    instance = (_profile_classes(args, cluster, options)
                if args.measure_on or args.time_model.endswith(".json")
                else profile_instance(args.model, cluster, options))
    write_json(instance, args.out)
    print(f"wrote {args.out}: {len(instance['model']['layers'])} layers, "
          f"{len(instance['devices'])} devices")
    return EXIT_OK


def _profile_classes(args: argparse.Namespace, cluster: Any, options: Any) -> dict[str, Any]:
    """Measured (--measure-on) and estimated (--time-model EST.json) class times."""
    from dataclasses import replace

    from edgepart.profiling.estimator import load_estimator
    from edgepart.profiling.measure import parse_measure_on, profile_classes

    estimator = load_estimator(args.time_model) if args.time_model.endswith(".json") else None
    if estimator is not None:
        options = replace(options, time_model="measured")
    return profile_classes(args.model, cluster, options,
                           [parse_measure_on(text) for text in args.measure_on], estimator,
                           args.trace_dir)


def _profile_llm(args: argparse.Namespace) -> int:
    from edgepart.instance import load_workload
    from edgepart.llm import LlmProfileOptions, profile_llm_instance, resolve_config
    from edgepart.profiling.clusters import load_cluster

    workload = load_workload({
        "kind": "llm", "prompt_tokens": args.prompt_tokens,
        "context_tokens": args.context_tokens, "batch": args.batch_size or 1,
        "phase": args.phase, "dtype": args.dtype})
    instance = profile_llm_instance(
        resolve_config(args.model, args.config), load_cluster(args.cluster),
        LlmProfileOptions(workload, name=args.name or Path(args.out).stem,
                          time_model=args.time_model, repeats=args.repeats, warmup=args.warmup,
                          threads=args.threads, statistic=args.statistic))
    write_json(instance, args.out)
    print(f"wrote {args.out}: {len(instance['model']['layers'])} layers, "
          f"{len(instance['devices'])} devices, {instance['meta']['parameters']:,} parameters")
    return EXIT_OK


def _host_flops(text: str | None, threads: int) -> float | None:
    if text is None:
        return None
    if text == "measure":
        from edgepart.profiling.probe import benchmark

        return benchmark(threads=max(threads, 1))[0]
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--host-flops: expected a number or 'measure', got {text!r}") from None


def _probe(args: argparse.Namespace) -> int:
    from edgepart.profiling.probe import probe

    if args.repeats < 1:
        raise InputError(f"--repeats: must be >= 1, got {args.repeats}")
    print_json(probe(args.repeats, rpc=not args.no_rpc, idle=not args.no_idle).to_json())
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from edgepart.profiling.catalog import load_catalog

    catalog = load_catalog()
    print_json({
        "reference_host": {"name": catalog.host_name, "flops_per_s": catalog.host_flops_per_s},
        "classes": {name: {"memory_bytes": c.memory_bytes, "flops_per_s": c.flops_per_s,
                           "speed_factor": round(c.speed_factor(catalog.host_flops_per_s), 4),
                           "description": c.description, "source": c.source}
                    for name, c in sorted(catalog.classes.items())},
    })
    return EXIT_OK


def _cluster(args: argparse.Namespace) -> int:
    from edgepart.profiling.clusters import cluster_to_json, load_cluster

    devices = _device_entries(args.devices)
    generator: dict[str, Any] = {"kind": args.kind, **_params(args.param)}
    if args.seed is not None:
        generator["seed"] = args.seed
    count = sum(entry["count"] for entry in devices)
    spec: dict[str, Any] = {"name": args.name or f"{args.kind}_{count}",
                            "devices": devices, "generator": generator}
    cluster = load_cluster(spec)
    ids = [d.id for d in cluster.devices]
    for end in ("source", "sink"):
        value = getattr(args, end)
        if value is not None:
            spec[end] = ids[0] if value == "first" else value
    data = cluster_to_json(load_cluster(spec))
    if args.out:
        write_json(data, args.out)
    else:
        print_json(data)
    return EXIT_OK


def _device_entries(text: str) -> list[dict[str, Any]]:
    entries = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        head, _, tier = item.partition("@")
        cls, _, count = head.partition(":")
        if not cls or (count and not count.isdigit()):
            raise InputError(f"--devices: expected CLASS:COUNT[@TIER], got {item!r}")
        entry: dict[str, Any] = {"class": cls, "count": int(count or 1)}
        if tier:
            entry["tier"] = tier
        entries.append(entry)
    if not entries:
        raise InputError("--devices: give at least one CLASS:COUNT")
    return entries


def _params(items: Sequence[str]) -> dict[str, float]:
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            params[key] = float(value)
        except ValueError:
            raise InputError(f"--param: expected KEY=NUMBER, got {item!r}") from None
    return params
