"""Scale benchmark: time to a proven optimum of each exact method on a layers x devices grid.

Instances, all built here (nothing is downloaded; built files live in a temporary directory):

1. ``pd_*``: the held-out PipeDream profiles (``../shared/external/pipedream/{alexnet,resnet18,
   vgg16}/graph.txt``, ``--pipedream-dir``) imported with ``edgepart import pipedream`` onto 32
   heterogeneous edge devices (12 Raspberry Pi 4, 12 Pi 5, 4 Jetson Nano, 4 NUC) on 1 Gbit/s
   Ethernet (``_eth``) and on a SEIFER-style wireless network (``_wifi``: the cluster file's
   ``wireless`` generator, which is SEIFER's link model as in ``bench/heuristic_gaps.py``, here
   with heterogeneous devices), batch 1, profiled on a V100 (a class the cluster file defines).
2. ``chain*``, ``bert*``, ``nasnet*``: the generator of ``bench/graphs.py`` (plain chains, BERT
   encoder blocks, NASNet-A cells; per-class times that disagree) from about 50 to 2,000 layers
   on 4 to 64 devices of the same four classes on 1 Gbit/s Ethernet (:data:`GRID`).
3. The shipped suite, ``instances/*.json`` (4 to 20 devices).

Methods: ``cpsat`` (CP-SAT on stage slots), ``highs`` (its default: paths where they apply,
else stage slots), ``auto`` (the package default: ``dp_ideals``, HiGHS on paths or CP-SAT on
stage slots; ``backend``/``formulation`` say which answered) and, with ``--cbc``, ``cbc``. Each
solve is ``edgepart.solve(inst, method, time_limit=LIMIT)`` in a forked child process (the
instance is built once, imports are done before the fork, so neither is timed), wall time
measured around the call; the child is killed at ``1.5 x LIMIT + 30`` s, and a traceback, a crash
or a kill becomes a status. The plan is re-checked (``validate_plan``, ``evaluate``) and proven
optima of different methods on one instance are compared.

Within a generated family, a method that did not prove an instance is skipped on every instance
of that family with at least as many layers and devices (``--no-skip`` runs everything), except
on the issue's target, the ~1,000-layer NASNet on 32 devices (:data:`ALWAYS`), which every method
runs.

    python bench/scale.py [--time-limit 60] [--quick] [--cbc] [--methods cpsat,highs,auto]
                          [--json FILE] [--csv FILE] [--write-docs] [--no-skip] [--only REGEX]
    python bench/scale.py --from-json FILE [--write-docs] [--csv FILE]  # report a saved run

The full grid takes about 35 minutes at 60 s per solve on 2 busy cores; ``--quick`` (a few small
instances, 10 s per solve unless ``--time-limit`` says otherwise) about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graphs
from _results import RESULTS, markdown_table, write_section

from edgepart import __version__, evaluate, get_method, load_instance, solve, validate_plan
from edgepart.cuts import MAX_IDEALS, DeviceTypes, ideal_family
from edgepart.instance import Instance
from edgepart.results import OPTIMALITY_TOL

ROOT = Path(__file__).resolve().parents[1]
PIPEDREAM = ROOT.parent / "shared" / "external" / "pipedream"
PIPEDREAM_MODELS = {"alexnet": 256, "resnet18": 256, "vgg16": 128}
"""Model -> the batch its published profile was taken at (docs/interop.md)."""
EDGE32 = [{"class": "rpi4", "count": 12}, {"class": "rpi5", "count": 12},
          {"class": "jetson_nano", "count": 4}, {"class": "nuc_cpu", "count": 4}]
NETWORKS = {
    "eth": {"kind": "ethernet", "bandwidth_mbit_s": 1000, "latency_s": 0.0005},
    "wifi": {"kind": "wireless", "seed": 2024, "side_m": 150, "latency_s": 0.001},
}
V100 = {"memory_bytes": 17179869184, "flops_per_s": 1.57e13,
        "description": "the GPU the published PipeDream profiles were measured on"}

GRID: dict[str, list[tuple[int, int]]] = {
    family: [(50, 4), (50, 32), (200, 8), (200, 64), (500, 16), (1000, 32), (2000, 8), (2000, 64)]
    for family in ("chain", "bert", "nasnet")
}
"""Generated (target layers, devices) per family; layer counts are the nearest a family has."""
ALWAYS = (("nasnet", 1000, 32),)
"""(family, target layers, devices) run by every method whatever failed before."""
QUICK_GRID: dict[str, list[tuple[int, int]]] = {
    "chain": [(50, 4)], "bert": [(50, 4)], "nasnet": [(50, 4)]}
QUICK_SHIPPED = ("vgg16_4nodes",)
QUICK_PIPEDREAM = (("alexnet", "eth"),)
METHODS = ("cpsat", "highs", "auto")
PROVEN = ("optimal", "infeasible")
"""Statuses that settle an instance."""


@dataclass
class Case:
    name: str
    family: str  # generated family (skipping applies), "pipedream" or "shipped"
    inst: Instance
    ideals: int | None  # None: more than MAX_IDEALS
    types: int
    always: bool = False  # never skipped

    @property
    def layers(self) -> int:
        return len(self.inst.model.layers)

    @property
    def devices(self) -> int:
        return len(self.inst.devices)


def case(name: str, family: str, inst: Instance) -> Case:
    fam = ideal_family(inst) if len(inst.model.layers) <= 20_000 else None
    types = DeviceTypes.of(inst, range(len(inst.devices))).n_types
    return Case(name, family, inst, None if fam is None else fam.size, types)


# --- instances ----------------------------------------------------------------------------------

def generated(grid: dict[str, list[tuple[int, int]]]) -> list[Case]:
    out = []
    for family, points in grid.items():
        for target, devices in sorted(points):
            if family == "chain":
                g = graphs.chain(target)
            elif family == "bert":
                g = graphs.bert(max(1, round((target - 6) / 14)))
            else:
                g = graphs.nasnet(**graphs.nasnet_cells_for(target))
            name = f"{family}{len(g)}_{devices}dev"
            c = case(name, family, load_instance(graphs.instance(g, devices, name=name)))
            c.always = (family, target, devices) in ALWAYS
            out.append(c)
    return out


def pipedream(tmp: Path, source: Path, which: tuple[tuple[str, str], ...] | None) -> list[Case]:
    """PipeDream profiles on 32 devices, through ``edgepart import pipedream``."""
    out = []
    for model, batch in PIPEDREAM_MODELS.items():
        graph = source / model / "graph.txt"
        for net, gen in NETWORKS.items():
            if which is not None and (model, net) not in which:
                continue
            if not graph.exists():
                print(f"note: {graph} not found, pd_{model}_32{net} left out", file=sys.stderr)
                continue
            cluster = tmp / f"edge32_{net}.json"
            cluster.write_text(json.dumps({
                "name": f"edge32_{net}", "classes": {"v100": V100}, "devices": EDGE32,
                "generator": gen, "source": "rpi4-0", "sink": "rpi4-0"}))
            name = f"pd_{model}_32{net}"
            out_path = tmp / f"{name}.json"
            cmd = ["edgepart", "import", "pipedream", str(graph), "--cluster", str(cluster),
                   "--out", str(out_path), "--profiled-on", "v100", "--batch-size", "1",
                   "--profiled-batch", str(batch), "--name", name]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"note: {' '.join(cmd)} failed: {proc.stderr.strip()}", file=sys.stderr)
                continue
            out.append(case(name, "pipedream", load_instance(out_path)))
    return out


def shipped(names: tuple[str, ...] | None) -> list[Case]:
    paths = sorted((ROOT / "instances").glob("*.json"))
    return [case(p.stem, "shipped", load_instance(p)) for p in paths
            if names is None or p.stem in names]


# --- one solve ----------------------------------------------------------------------------------

def _child(inst: Instance, method: str, limit: float, memory: int, conn: Any) -> None:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    start = time.perf_counter()
    try:
        result = solve(inst, method, time_limit=limit)
        wall = time.perf_counter() - start
        row: dict[str, Any] = {
            "status": result.status.value, "termination": result.termination.value,
            "wall_s": wall, "objective_s": result.objective_s if result.has_plan else None,
            "bound_s": result.bound_s if math.isfinite(result.bound_s) else None,
            "gap_pct": 100 * result.gap if result.has_plan else None,
            "backend": result.extra.get("backend", method),
            "formulation": result.extra.get("formulation", ""),
            "message": result.message[:300], "check": "ok"}
        if result.plan is not None:
            problems = validate_plan(inst, result.plan)
            if problems:
                row["check"] = f"invalid plan: {problems[0]}"
            else:
                value = evaluate(inst, result.plan).objective(result.objective)
                if abs(value - result.objective_s) > 1e-9 * max(1.0, value):
                    row["check"] = f"objective {result.objective_s!r} != evaluated {value!r}"
    except MemoryError:
        row = {"status": "memory_limit", "wall_s": time.perf_counter() - start, "check": "",
               "message": f"MemoryError under the {memory / 2**30:.0f} GiB address-space limit"}
    except BaseException:  # a traceback is a result to report, not a crash of the benchmark
        row = {"status": "traceback", "wall_s": time.perf_counter() - start,
               "message": traceback.format_exc()[-1500:], "check": ""}
    conn.send(row)
    conn.close()


def run_one(inst: Instance, method: str, limit: float, memory: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(inst, method, limit, memory, send), daemon=True)
    start = time.perf_counter()
    proc.start()
    send.close()
    hard = 1.5 * limit + 30
    row: dict[str, Any] | None = None
    try:
        if recv.poll(hard):
            row = recv.recv()
    except EOFError:
        pass
    elapsed = time.perf_counter() - start
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if row is None:
        status = "killed" if elapsed >= hard else "crashed"
        row = {"status": status, "wall_s": elapsed, "check": "",
               "message": f"child exit code {proc.exitcode} after {elapsed:.1f} s"
                          + (f" (killed at {hard:.0f} s)" if status == "killed" else "")}
    return row


# --- the run ------------------------------------------------------------------------------------

def skipped_by(c: Case, method: str, done: list[dict[str, Any]], cases: dict[str, Case]
               ) -> str | None:
    """The smaller instance of ``c``'s generated family that ``method`` failed on, if any."""
    if c.family in ("shipped", "pipedream") or c.always:
        return None
    for row in done:
        other = cases[row["instance"]]
        if (row["method"] == method and other.family == c.family and other is not c
                and other.layers <= c.layers and other.devices <= c.devices
                and row["status"] not in PROVEN and row["status"] != "skipped"):
            return other.name
    return None


def line(row: dict[str, Any]) -> str:
    gap = "" if row.get("gap_pct") is None else f"{row['gap_pct']:.2f}%"
    via = "/".join(x for x in (row.get("backend"), row.get("formulation")) if x)
    over = "" if row.get("overrun_s") is None else f"{row['overrun_s']:+.1f}"
    return (f"{row['instance']:<26} {row['layers']:>5} {row['ideals']:>6} {row['devices']:>3} "
            f"{row['types']:>3}  {row['method']:<6} {row['status']:<10} "
            f"{_num(row.get('wall_s'), 2):>7} {over:>6} {gap:>8}  {via:<16} {row.get('note', '')}")


def _num(x: Any, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per solve (default 60; 10 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few small instances")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cbc", action="store_true", help="add CBC (its default formulation)")
    parser.add_argument("--no-skip", action="store_true",
                        help="run every method on every instance")
    parser.add_argument("--only", default=None, help="regex on instance names")
    parser.add_argument("--memory-gb", type=float, default=10.0,
                        help="address-space limit of each solve's process (0: none)")
    parser.add_argument("--pipedream-dir", type=Path, default=PIPEDREAM)
    parser.add_argument("--json", type=Path, default=None, help="write every row as JSON")
    parser.add_argument("--csv", type=Path, default=None, help="write every row as CSV")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the table and summary into docs/results.md")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="report a run saved with --json instead of running one")
    parser.add_argument("--results-file", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        publish(args, saved["rows"], saved["meta"]["methods"], saved["meta"])
        return
    limit = args.time_limit or (10.0 if args.quick else 60.0)
    methods = [m for m in args.methods.split(",") if m] + (["cbc"] if args.cbc else [])
    for m in methods:
        get_method(m)  # imports every backend now, so no solve pays for it
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    commit = _git()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepart-scale-") as tmp:
        cases = (shipped(QUICK_SHIPPED if args.quick else None)
                 + pipedream(Path(tmp), args.pipedream_dir, QUICK_PIPEDREAM if args.quick
                             else None)
                 + generated(QUICK_GRID if args.quick else GRID))
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    by_name = {c.name: c for c in cases}
    total = len(cases) * len(methods)
    print(f"# {len(cases)} instances x {len(methods)} methods, {limit:g} s per solve; "
          f"load average at start {_load(load_start)}", flush=True)
    print(f"{'instance':<26} {'layers':>5} {'ideals':>6} {'dev':>3} {'typ':>3}  {'method':<6} "
          f"{'status':<10} {'wall_s':>7} {'over':>6} {'gap':>8}  {'via':<16} note", flush=True)
    rows: list[dict[str, Any]] = []
    k = 0
    for c in cases:
        for method in methods:
            k += 1
            base = {"instance": c.name, "family": c.family, "layers": c.layers,
                    "ideals": c.ideals if c.ideals is not None else f">{MAX_IDEALS}",
                    "devices": c.devices, "types": c.types, "method": method}
            failed_on = None if args.no_skip else skipped_by(c, method, rows, by_name)
            if failed_on:
                row = {**base, "status": "skipped", "note": f"not proven on {failed_on}"}
            else:
                print(f"[{k}/{total}] {c.name} {method} ...", file=sys.stderr, flush=True)
                row = {**base, **run_one(c.inst, method, limit, int(args.memory_gb * 2**30))}
                row["overrun_s"] = row["wall_s"] - limit
                row["load1"] = os.getloadavg()[0]
                notes = []
                if row["wall_s"] > limit * 1.05 + 1:
                    notes.append(f"overran the limit by {row['overrun_s']:.1f} s")
                if row.get("check") not in (None, "", "ok"):
                    notes.append(str(row["check"]))
                if row["status"] in ("traceback", "crashed", "killed", "memory_limit"):
                    notes.append(row.get("message", "").strip().splitlines()[-1][:160])
                row["note"] = "; ".join(notes)
            rows.append(row)
            print(line(row), flush=True)
        for problem in cross_check([r for r in rows if r["instance"] == c.name]):
            print(f"!! {c.name}: {problem}", flush=True)
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    meta = {"command": "python bench/scale.py " + " ".join(sys.argv[1:] if argv is None
                                                            else argv),
            "time_limit_s": limit, "methods": methods, "started": started, "commit": commit,
            "wall_s": round(wall, 1), "load_start": load_start, "load_end": load_end,
            "cpus": os.cpu_count(), "edgepart": __version__,
            "python": platform.python_version(), "machine": platform.machine()}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    publish(args, rows, methods, meta)


def publish(args: argparse.Namespace, rows: list[dict[str, Any]], methods: list[str],
            meta: dict[str, Any]) -> None:
    """Print the report of a run (and write it as CSV and into docs/results.md if asked)."""
    body = report(rows, methods, meta)
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    if args.write_docs:
        write_section("scale", body, args.results_file)
    print()
    print(body, flush=True)


def _git() -> str:
    """The commit the run imported, and whether edgepart/ had uncommitted changes."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True,
                                  text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" with uncommitted changes in edgepart/"
                   if git("status", "--porcelain", "--", "edgepart") else "")


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


# --- checks and summary -------------------------------------------------------------------------

def cross_check(rows: list[dict[str, Any]]) -> list[str]:
    """Disagreements between methods on one instance: two proven optima that differ, or a plan
    below another method's proven bound."""
    problems = []
    proven = [r for r in rows if r["status"] == "optimal"]
    for a in proven:
        for b in rows:
            if b is a or b.get("objective_s") is None:
                continue
            if b["objective_s"] < a["objective_s"] * (1 - 10 * OPTIMALITY_TOL):
                problems.append(f"{b['method']} found {b['objective_s']:.9g} s below "
                                f"{a['method']}'s proven optimum {a['objective_s']:.9g} s")
    statuses = {r["method"]: r["status"] for r in rows}
    if "infeasible" in statuses.values() and any(r.get("objective_s") is not None for r in rows):
        problems.append(f"a method proved infeasibility where another found a plan: {statuses}")
    return problems


def wide_table(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    out = []
    for name, grp in pd.DataFrame(rows).groupby("instance", sort=False):
        first = grp.iloc[0]
        row: dict[str, Any] = {"instance": name, "layers": first["layers"],
                               "ideals": first["ideals"], "devices": first["devices"],
                               "types": first["types"]}
        notes = []
        for m in methods:
            hit = grp[grp["method"] == m]
            if not len(hit):
                continue
            r = hit.iloc[0]
            row[f"{m} status"] = r["status"]
            row[f"{m} s"] = "" if r["status"] == "skipped" else _secs(r["wall_s"])
            gap = r.get("gap_pct")
            row[f"{m} gap %"] = "" if gap is None or pd.isna(gap) else f"{gap:.2f}"
            if r["status"] == "skipped":
                row[f"{m} via"] = ""
            else:
                row[f"{m} via"] = "/".join(str(x) for x in (r.get("backend"),
                                                            r.get("formulation"))
                                           if isinstance(x, str) and x)
            if isinstance(r.get("note"), str) and r["note"]:
                notes.append(f"{m}: {r['note']}")
        row["notes"] = "; ".join(notes)
        out.append(row)
    return out


def largest(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Per method, the largest instance (layers x devices) proven, overall and per family."""
    frame = pd.DataFrame(rows)
    families = list(dict.fromkeys(frame["family"]))
    out = []
    for m in methods:
        sub = frame[(frame["method"] == m) & (frame["status"] == "optimal")]
        row: dict[str, Any] = {"method": m, "proven": f"{len(sub)} of "
                               f"{int((frame['method'] == m).sum())}"}
        if len(sub):
            most = max(sub.itertuples(), key=lambda r: (r.layers, r.devices))
            row["most layers"] = (f"{most.instance} ({most.layers} x {most.devices}, "
                                  f"{_secs(most.wall_s)} s)")
        else:
            row["most layers"] = "-"
        for fam in ["all", *families]:
            part = sub if fam == "all" else sub[sub["family"] == fam]
            if not len(part):
                row[fam] = "-"
                continue
            best = max(part.itertuples(), key=lambda r: (r.layers * r.devices, r.layers))
            row[fam] = f"{best.instance} ({best.layers} x {best.devices}, {_secs(best.wall_s)} s)"
        out.append(row)
    return out


def auto_vs_best(rows: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """How often ``auto`` proved an instance within 1.5x of the fastest proof, and where not."""
    frame = pd.DataFrame(rows)
    slow = []
    n = within = within_abs = 0
    for name, grp in frame.groupby("instance", sort=False):
        proven = grp[grp["status"] == "optimal"]
        if not len(proven):
            continue
        n += 1
        best = proven.loc[proven["wall_s"].idxmin()]
        auto = grp[grp["method"] == "auto"]
        a = auto.iloc[0] if len(auto) else None
        ok = a is not None and a["status"] == "optimal" and a["wall_s"] <= 1.5 * best["wall_s"]
        ok_abs = ok or (a is not None and a["status"] == "optimal"
                        and a["wall_s"] - best["wall_s"] <= 1.0)
        within += ok
        within_abs += ok_abs
        if not ok:
            slow.append({"instance": name, "best": best["method"],
                         "best s": _secs(best["wall_s"]),
                         "auto status": "-" if a is None else a["status"],
                         "auto s": "-" if a is None or a["status"] == "skipped"
                         else _secs(a["wall_s"]),
                         "auto via": "" if a is None else "/".join(
                             str(x) for x in (a.get("backend"), a.get("formulation"))
                             if isinstance(x, str) and x)})
    text = (f"`auto` was within 1.5x of the fastest proof on {within} of the {n} instances that "
            f"some method proved ({within_abs} of {n} counting those within 1 s of it)")
    return text, slow


def report(rows: list[dict[str, Any]], methods: list[str], meta: dict[str, Any]) -> str:
    limit = meta["time_limit_s"]
    over = [r for r in rows if r.get("wall_s") is not None and r["status"] != "skipped"
            and r["wall_s"] > limit * 1.05 + 1]
    bad = [r for r in rows if r["status"] in ("traceback", "crashed", "killed", "memory_limit")
           or r.get("check") not in (None, "", "ok")]
    conflicts = [f"{name}: {p}" for name in dict.fromkeys(r["instance"] for r in rows)
                 for p in cross_check([r for r in rows if r["instance"] == name])]
    auto_text, slow = auto_vs_best(rows)
    lines = [
        "## Scale: time to a proven optimum by size",
        "",
        f"Made by `{meta['command'].strip()}` (edgepart {meta['edgepart']} at "
        f"{meta.get('commit', 'unknown')}, started {meta['started']}, Python "
        f"{meta['python']}, {meta['machine']}, {meta['cpus']} cores shared with other jobs; "
        f"load average 1/5/15 min {_load(meta['load_start'])} at the start and "
        f"{_load(meta['load_end'])} at the end; {_duration(meta['wall_s'])} in all). Each "
        f"solve is `edgepart.solve(inst, method, time_limit={limit:g})` in its own process, "
        "wall time around the call. `cpsat`: CP-SAT on stage slots; `highs`: HiGHS with its "
        "default formulation (paths where they apply); `auto`: the package default (`dp_ideals`, "
        "HiGHS on paths or CP-SAT on stage slots; `via` says which answered). `ideals`: "
        f"predecessor-closed layer sets (`>{MAX_IDEALS}`: paths and `dp_ideals` do not apply); "
        "`types`: classes of interchangeable devices (every device of a wireless network is its "
        "own). `skipped`: the method did not prove a smaller instance (no more layers, no more "
        "devices) of the same generated family (the ~1,000-layer NASNet on 32 devices, the "
        "issue's target, is never skipped). `pd_*` are PipeDream profiles on 32 devices, "
        "`chain*`, `bert*` and `nasnet*` come from `bench/graphs.py`, the rest is the shipped "
        "suite; see `bench/scale.py`.",
        "",
        markdown_table(wide_table(rows, methods)),
        "",
        "### Largest instance proven within the limit (layers x devices)",
        "",
        "`all` and the family columns: the proven instance with the most layers x devices; "
        "`most layers`: the one with the most layers.",
        "",
        markdown_table(largest(rows, methods)),
        "",
        f"{auto_text}.",
        "",
    ]
    if slow:
        lines += ["Where `auto` was not within 1.5x of the fastest proof:", "",
                  markdown_table(slow), ""]
    lines.append(f"Solves over `limit x 1.05 + 1 s`: {len(over)}"
                 + (" (" + ", ".join(f"{r['instance']} {r['method']} {r['wall_s']:.1f} s"
                                     for r in over) + ")" if over else "")
                 + ". Tracebacks, crashes, kills, memory limits or plans failing the re-check: "
                 + str(len(bad))
                 + (" (" + ", ".join(f"{r['instance']} {r['method']}: {r['status']}"
                                     for r in bad) + ")" if bad else "")
                 + f". Methods contradicting each other: {len(conflicts)}"
                 + (" (" + "; ".join(conflicts) + ")" if conflicts else "") + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
