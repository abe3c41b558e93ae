"""FlexPie-style table: latency of one request per model and network, the proven hybrid optimum
against the device-group baselines and the pipeline optimum (issue 11).

For each model of the shipped ``instances/hybrid_*_4eq.json`` (4 equal Raspberry Pi 4) and each
network (100 Mbit/s Ethernet, 1 Gbit/s Ethernet, both 0.5 ms per message; Wi-Fi between two
stations through one access point: 150 Mbit/s and 4 ms, the ``wifi8_mixed`` cluster's
device-to-device link), it solves the latency objective with ``groups`` over hybrid plans (proven
optimum) and over pipeline plans, and runs ``flexpie``, ``onedim``, ``grid2d`` and
``dataparallel``; every plan is scored by the one evaluator. Prints the table (latency in ms and
the speedup of the hybrid optimum over each) and writes it into ``docs/hybrid.md`` between
``<!-- hybrid:begin -->`` and ``<!-- hybrid:end -->``.

    python bench/hybrid.py [--no-write]

About 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _results import markdown_table, write_section  # noqa: E402

from edgepart.instance import Instance, load_instance  # noqa: E402
from edgepart.results import SolutionStatus  # noqa: E402
from edgepart.solvers.base import SolveOptions, solve  # noqa: E402

MODELS = {"VGG-16": "hybrid_vgg16_4eq", "AlexNet": "hybrid_alexnet_4eq"}
NETWORKS = {
    "100 Mbit/s": {"bandwidth_bytes_per_s": 12.5e6, "latency_s": 0.0005},
    "1 Gbit/s": {"bandwidth_bytes_per_s": 125e6, "latency_s": 0.0005},
    "Wi-Fi": {"bandwidth_bytes_per_s": 18.75e6, "latency_s": 0.004},
}
BASELINES = ("flexpie", "onedim", "grid2d", "dataparallel")


def on_network(inst: Instance, link: dict[str, float]) -> Instance:
    """``inst`` with one ``link`` between every pair of devices."""
    data = inst.to_dict()
    data["links"] = {"default": dict(link)}
    return load_instance(data)


def row(model: str, network: str, inst: Instance) -> dict[str, Any]:
    hybrid = solve(inst, "groups", SolveOptions(objective="latency", plan_space="hybrid"))
    if hybrid.status is not SolutionStatus.OPTIMAL:
        raise SystemExit(f"{inst.name} on {network}: hybrid optimum not proven: {hybrid.message}")
    pipeline = solve(inst, "groups", SolveOptions(objective="latency"))
    best = hybrid.objective_s
    out: dict[str, Any] = {"model": model, "network": network,
                           "hybrid optimum (ms)": f"{1e3 * best:.1f}",
                           "plan": _describe(hybrid.plan)}
    runs = {"pipeline optimum": pipeline}
    runs.update({name: solve(inst, name, SolveOptions(objective="latency")) for name in BASELINES})
    for name, result in runs.items():
        out[f"{name} (ms)"] = f"{1e3 * result.objective_s:.1f}" if result.has_plan else "-"
        out[f"x {name}"] = f"{result.objective_s / best:.2f}" if result.has_plan else "-"
    return out


def _describe(plan: Any) -> str:
    parts = []
    for st in plan.stages:
        if st.schemes:
            counts: dict[str, int] = {}
            for _, s in st.schemes:
                counts[s.value] = counts.get(s.value, 0) + 1
            what = "/".join(f"{n} {k}" for k, n in sorted(counts.items()))
            parts.append(f"split x{len(st.members)} ({what})")
        else:
            parts.append(f"{st.mode.value} x{len(st.members)}")
    return " + ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for model, name in MODELS.items():
        base = load_instance(ROOT / "instances" / f"{name}.json")
        for network, link in NETWORKS.items():
            rows.append(row(model, network, on_network(base, link)))
            print(f"  {model} on {network} done", file=sys.stderr, flush=True)
    table = markdown_table(rows)
    wall = time.perf_counter() - start
    note = (f"One run of `python bench/hybrid.py`, {wall:.0f} s on {platform.machine()} "
            f"({len(MODELS) * len(NETWORKS)} instances; latency of one request, ms; "
            "`x NAME` = NAME's latency / the hybrid optimum's).")
    print(table)
    print(note)
    if not args.no_write:
        write_section("hybrid", f"{table}\n\n{note}", ROOT / "docs" / "hybrid.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
