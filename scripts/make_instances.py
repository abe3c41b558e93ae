"""Regenerate the shipped instance suite in instances/ (see instances/README.md).

    python scripts/make_instances.py                # every instance (a few minutes on 2 cores)
    python scripts/make_instances.py resnet50_8nodes  # just these
    python scripts/make_instances.py --commands     # print the equivalent edgepart commands

Each instance is exactly one ``edgepart profile`` command; this script only runs them in turn.
Layer times are measured, so they differ from run to run by machine noise; everything else
(layers, FLOPs, bytes, edges, devices, links) is identical. The suite takes each layer's
minimum over the repeats (``--statistic min``), the uncontended time, because the machine that
made it is shared with other programs; before each instance the script also waits (up to
--max-wait seconds) until the 1-minute load average leaves a core free.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgepart.cli import main  # noqa: E402  (after the path set-up above)

CLUSTERS = "instances/clusters"
INCEPTION = ["--input-shape", "1,3,299,299",
             "--model-arg", "aux_logits=False", "--model-arg", "init_weights=False"]

# name -> (model, cluster file, extra arguments)
SUITE: dict[str, tuple[str, str, list[str]]] = {
    "resnet50_8nodes": ("torchvision:resnet50", "lab8", []),
    "vgg16_4nodes": ("torchvision:vgg16", "lab4", []),
    "mobilenet_v2_4nodes": ("torchvision:mobilenet_v2", "lab4", []),
    "inception_v3_8nodes": ("torchvision:inception_v3", "wifi8_mixed", INCEPTION),
    "vit_b_16_8nodes": ("torchvision:vit_b_16", "lab8", []),
    "resnet50_16nodes": ("torchvision:resnet50", "lab16", []),
    "resnet50_20nodes_wireless": ("torchvision:resnet50", "wireless20", []),
    "resnet50_8nodes_tight": ("torchvision:resnet50", "lab8_tight", []),
    "vgg16_4nodes_tight": ("torchvision:vgg16", "zero4_tight", []),
    "vit_b_16_8nodes_tight": ("torchvision:vit_b_16", "lab8_vit_tight", []),
}


def command(name: str) -> list[str]:
    """The ``edgepart`` arguments that make instance ``name``."""
    model, cluster, extra = SUITE[name]
    return ["profile", model, "--cluster", f"{CLUSTERS}/{cluster}.json",
            "--out", f"instances/{name}.json", "--granularity", "module",
            "--repeats", "10", "--warmup", "3", "--statistic", "min", *extra]


def wait_for_quiet(max_wait_s: float) -> None:
    """Sleep until the 1-minute load average is at most (CPUs - 1), or for ``max_wait_s``."""
    limit = max(1.0, len(os.sched_getaffinity(0)) - 1.0)
    deadline = time.monotonic() + max_wait_s
    while (load := os.getloadavg()[0]) > limit:
        if time.monotonic() > deadline:
            print(f"  host still busy (load {load:.1f} > {limit:.0f}); profiling anyway",
                  flush=True)
            return
        print(f"  host busy (load {load:.1f} > {limit:.0f}), waiting", flush=True)
        time.sleep(15)


def suite_parser(doc: str, suite: Mapping[str, object]) -> argparse.ArgumentParser:
    """The arguments every make_*instances script takes: names, ``--commands``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"instances to make (default: all {len(suite)})")
    parser.add_argument("--commands", action="store_true", help="print the commands and exit")
    return parser


def make_each(parser: argparse.ArgumentParser, suite: Mapping[str, object],
              command: Callable[[str], list[str]],
              before: Callable[[argparse.Namespace], None] = lambda args: None) -> int:
    """Print each chosen instance's command and, unless ``--commands``, run it (after
    ``before``) and print its time; the first failing command's status ends the run."""
    args = parser.parse_args()
    names = args.names or list(suite)
    unknown = [n for n in names if n not in suite]
    if unknown:
        parser.error(f"unknown instance(s) {', '.join(unknown)}; known: {', '.join(suite)}")
    for name in names:
        print("edgepart " + shlex.join(command(name)), flush=True)
        if args.commands:
            continue
        before(args)
        start = time.perf_counter()
        status = main(command(name))
        if status != 0:
            return status
        print(f"  {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def run() -> int:
    parser = suite_parser(__doc__, SUITE)
    parser.add_argument("--max-wait", type=float, default=120.0, metavar="S",
                        help="longest wait for a quiet host before each instance (default 120)")
    return make_each(parser, SUITE, command, lambda args: wait_for_quiet(args.max_wait))


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(run())
