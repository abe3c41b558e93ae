"""``edgepart import pipedream|msr|msr-plan`` and ``edgepart export-plan msr|torch``.

Argument parsing and printing only; the conversions live in :mod:`edgepart.interop.pipedream`,
:mod:`edgepart.interop.msr` and :mod:`edgepart.interop.torch_pipelining`. Exit codes follow
:mod:`edgepart.cli_common`: 0 done, 2 bad input (one line on stderr), and 1 for
``export-plan torch`` when the plan is valid but cannot be written as split points.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepart.cli_common import EXIT_BAD_INPUT, EXIT_NO_PLAN, EXIT_OK
from edgepart.errors import InputError
from edgepart.instance import load_instance
from edgepart.plan import Plan, load_plan

if TYPE_CHECKING:
    from edgepart.profiling.catalog import DeviceClass

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # a parser's sub-commands

__all__ = ["main", "register"]


def register(subparsers: Commands) -> None:
    """Add ``import`` and ``export-plan`` with their sub-commands."""
    imp = subparsers.add_parser("import", help="convert another tool's profile or split")
    kinds = imp.add_subparsers(dest="format", required=True, metavar="FORMAT")
    _add_import_pipedream(kinds)
    _add_import_msr(kinds)
    _add_import_msr_plan(kinds)
    exp = subparsers.add_parser("export-plan", help="write a plan in another tool's format")
    targets = exp.add_subparsers(dest="format", required=True, metavar="FORMAT")
    _add_export_msr(targets)
    _add_export_torch(targets)


def _command(sub: Commands, name: str, help: str,
             handler: Callable[[argparse.Namespace], int], source: tuple[str, str],
             instance: str | None = None) -> argparse.ArgumentParser:
    """Sub-command ``name`` run by ``handler``: its one positional argument ``source``
    (name, help) and, given its help, a required ``--instance``."""
    p = sub.add_parser(name, help=help)
    p.add_argument(source[0], help=source[1])
    if instance is not None:
        p.add_argument("--instance", required=True, help=instance)
    p.set_defaults(handler=handler)
    return p


def _add_import_pipedream(kinds: Commands) -> None:
    p = _command(kinds, "pipedream", "a PipeDream profiler graph.txt onto a cluster",
                 _import_pipedream, ("graph", "PipeDream graph.txt"))
    p.add_argument("--cluster", required=True, help="cluster JSON (see docs/profiling.md)")
    p.add_argument("--out", required=True, help="instance JSON to write")
    p.add_argument("--profiled-on", metavar="CLASS",
                   help="device class the times were measured on: a class of the cluster file "
                        "(devices or 'classes') or of the catalog (default: the cluster's class "
                        "with the most FLOP/s)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples per request (default 256, the profiled batch)")
    p.add_argument("--profiled-batch", type=int, default=256,
                   help="batch size of the profile (default 256)")
    p.add_argument("--name", help="instance name (default: the graph's folder name)")


def _add_import_msr(kinds: Commands) -> None:
    p = _command(kinds, "msr", "an MSR device-placement (NeurIPS 2020) input file",
                 _import_msr, ("file", "MSR input JSON"))
    p.add_argument("--out", required=True, help="instance JSON to write")
    p.add_argument("--bandwidth-bytes-per-s", type=float, default=1.0,
                   help="link bandwidth B: tensor bytes = edge cost x B (default 1)")
    p.add_argument("--no-cpus", action="store_true",
                   help="drop the CPUs (exact accounting; CPU-only nodes become an error)")
    p.add_argument("--name", help="instance name (default: the file name)")


def _add_import_msr_plan(kinds: Commands) -> None:
    p = _command(kinds, "msr-plan", "an MSR split file as an edgepart plan", _import_msr_plan,
                 ("file", "split JSON ({\"fpgas\": [{\"nodes\": [...]}], \"cpus\": ...})"),
                 instance="the instance imported from MSR")
    p.add_argument("--out", required=True, help="plan JSON to write")


def _add_export_msr(targets: Commands) -> None:
    p = _command(targets, "msr", "a plan as an MSR split file", _export_msr,
                 ("plan", "plan JSON"), instance="instance JSON")
    p.add_argument("--out", help="file to write (default: stdout)")


def _add_export_torch(targets: Commands) -> None:
    p = _command(targets, "torch", "a plan as a torch.distributed.pipelining split spec",
                 _export_torch, ("plan", "plan JSON"),
                 instance="instance JSON (layers list fx nodes)")
    p.add_argument("--model", metavar="SPEC",
                   help="the profiled model: torchvision:NAME or package.module:factory "
                        "(default: the instance's meta.model_spec, with its meta.model_kwargs)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model factory (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Python code")


# ---------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------


def _import_pipedream(args: argparse.Namespace) -> int:
    from edgepart.interop import pipedream
    from edgepart.profiling.clusters import load_cluster

    graph = pipedream.read_pipedream(args.graph)
    name = args.name or Path(args.graph).resolve().parent.name or "pipedream"
    cluster = load_cluster(args.cluster)
    data = pipedream.instance_data(graph, cluster,
                                   profiled_on=_cluster_class(args.cluster, args.profiled_on),
                                   batch_size=args.batch_size,
                                   profiled_batch=args.profiled_batch, name=name)
    _write_instance(data, args.out, name)
    return EXIT_OK


def _cluster_class(path: str, name: str | None) -> str | DeviceClass | None:
    """The class ``name`` as defined in the cluster file's ``classes`` (it need not have a
    device: e.g. the profiling GPU), else the name itself."""
    from edgepart.files import read_json
    from edgepart.profiling.catalog import parse_device_class

    own = read_json(path).get("classes", {}) if name else {}
    if name is None or not isinstance(own, dict) or name not in own:
        return name
    return parse_device_class(name, own[name], f"cluster.classes.{name}")


def _import_msr(args: argparse.Namespace) -> int:
    from edgepart.interop import msr

    name = args.name or Path(args.file).stem
    data = msr.instance_data(msr.read_msr(args.file), name=name, cpus=not args.no_cpus,
                             bandwidth_bytes_per_s=args.bandwidth_bytes_per_s)
    _write_instance(data, args.out, name)
    if data["meta"]["cpus"].startswith("kept"):
        print("note: CPU stages are charged their transfers, unlike the MSR model (their CPUs "
              "pay none); use --no-cpus for exact accounting", file=sys.stderr)
    return EXIT_OK


def _import_msr_plan(args: argparse.Namespace) -> int:
    from edgepart.interop import msr

    inst = load_instance(args.instance)
    plan = msr.split_to_plan(inst, msr.read_split(args.file), method=f"msr:{Path(args.file).stem}")
    plan.save(args.out)
    print(f"wrote {args.out}: {len(plan.stages)} stage(s) "
          f"({', '.join(s.device for s in plan.stages)})")
    return EXIT_OK


def _export_msr(args: argparse.Namespace) -> int:
    from edgepart.interop import msr

    split = msr.plan_to_split(load_instance(args.instance), _pipeline_plan(args.plan))
    _emit(json.dumps(split, indent=2) + "\n", args.out)
    return EXIT_OK


def _export_torch(args: argparse.Namespace) -> int:
    from edgepart.interop import torch_pipelining as tp
    from edgepart.profiling.model_spec import build_model, parse_model_args

    inst, plan = load_instance(args.instance), _pipeline_plan(args.plan)
    spec = args.model or inst.meta.get("model_spec")
    if not isinstance(spec, str):
        raise InputError("--model: give the model spec (the instance's meta.model_spec is "
                         "missing)")
    kwargs = (parse_model_args(args.model_arg) if args.model_arg or args.model
              else dict(inst.meta.get("model_kwargs", {})))
    module = build_model(spec, kwargs)
    try:
        split = tp.torch_split(inst, plan, tp.fx_calls(module))
    except tp.NotExpressible as err:
        print(f"edgepart: not expressible as split points: {err}", file=sys.stderr)
        return EXIT_NO_PLAN
    _emit(split.to_json() + "\n" if args.json else split.to_code(), None)
    return EXIT_OK


def _pipeline_plan(path: str) -> Plan:
    """The plan at ``path``; the export formats hold one device per stage, so groups are refused."""
    plan = load_plan(path)
    for b, stage in enumerate(plan.stages):
        if stage.is_group:
            raise InputError(f"{path}: stages[{b}]: a {stage.mode} group of "
                             f"{len(stage.devices)} devices has no form in this export format")
    return plan


def _write_instance(data: dict[str, Any], out: str, name: str) -> None:
    from edgepart.interop._common import validated_instance

    inst = validated_instance(data, name)
    Path(out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}: {len(inst.model.layers)} layers, {len(inst.model.edges)} edges, "
          f"{len(inst.devices)} devices")


def _emit(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one interop command on its own (``python -m edgepart.interop.cli import msr ...``)."""
    parser = argparse.ArgumentParser(prog="edgepart")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except InputError as err:
        print(f"edgepart: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
