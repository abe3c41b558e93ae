"""A sweep table as one self-contained HTML page (and its summary as Markdown).

The page (:func:`html_report`) has, in order, one section each for: the per-method summary
(:func:`method_summary`, an HTML table), the gap of each method against the proven optima (box
plot per method and objective), the gap against instance size (layers x devices, log scale),
the wall time per backend (the backend that answered, log scale), the Pareto fronts of the
given Pareto tables (:func:`edgepart.plots.plot_pareto`), and one plan per instance family
(:func:`edgepart.plots.plot_timeline`: the best plan of the family's largest instance on the
period). Figures are PNG files inlined as ``data:`` URLs and the style sheet is inline, so the
page names no external URL and opens offline.

Gaps are the sweep's ``gap_pct``, ``100 (value - optimum) / optimum`` against the suite
manifest's *proven* optima only; a run counts as *at the optimum* when its gap is at most
``100 x OPTIMALITY_TOL`` percent, the tolerance under which a plan is called optimal.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgepart import __version__
from edgepart.errors import InputError
from edgepart.files import read_json
from edgepart.instance import load_instance
from edgepart.plan import Plan
from edgepart.plots import plot_pareto, plot_timeline
from edgepart.results import OPTIMALITY_TOL

__all__ = [
    "SECTIONS", "gap_matrix", "html_report", "load_pareto", "markdown_report", "method_summary",
    "pairwise",
]

SECTIONS = ("Summary per method", "Gap to the proven optimum", "Gap against instance size",
            "Solve time per backend", "Pareto fronts", "One plan per instance family")
"""The page's section headings, in order (the browser test looks for each)."""
AT_OPTIMUM_PCT = 100 * OPTIMALITY_TOL
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:0.5em 0}p.note{color:#555;font-size:13px}"""


# --- tables -------------------------------------------------------------------------------------

def method_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and objective: runs, runs on instances with a proven optimum, runs with a
    plan, share at the optimum, mean / median / max gap (%), runs without a plan, errors and
    the mean wall time."""
    rows = []
    for (method, objective), grp in table.groupby(["method", "objective"], sort=True):
        known = grp[grp["optimum_s"].notna()]
        gaps = known["gap_pct"].dropna()
        rows.append({
            "method": method, "objective": objective, "runs": len(grp),
            "with proven optimum": len(known), "plans": int(grp["objective_s"].notna().sum()),
            "share optimal %": 100 * float((gaps <= AT_OPTIMUM_PCT).sum()) / len(known)
            if len(known) else math.nan,
            "mean gap %": gaps.mean(), "median gap %": gaps.median(), "max gap %": gaps.max(),
            "no plan": int((grp["objective_s"].isna() & (grp["status"] != "error")).sum()),
            "errors": int((grp["status"] == "error").sum()),
            "mean wall s": grp["wall_s"].mean()})
    return pd.DataFrame(rows)


def gap_matrix(table: pd.DataFrame, objective: str = "bottleneck") -> pd.DataFrame:
    """Instances (rows) x methods (columns) of ``gap_pct`` on ``objective``, with the proven
    optimum in ms; instances without a proven optimum are left out."""
    rows = table[(table["objective"] == objective) & table["optimum_s"].notna()]
    if rows.empty:
        return pd.DataFrame()
    gaps = rows.pivot_table(index="instance", columns="method", values="gap_pct",
                            aggfunc="first", dropna=False)
    optimum = rows.groupby("instance")["optimum_s"].first() * 1e3
    gaps.insert(0, "optimum_ms", optimum)
    return gaps.sort_index()


def pairwise(table: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Method A against method B per objective, over the runs (same instance, objective and
    options) where both have a plan: the geometric mean of A / B, how much lower A is than B
    in percent of B (mean, min, max), and on how many A is lower, equal (relative 1e-9) or
    higher."""
    rows = []
    for a, b in pairs:
        key = ["instance", "objective", "options"]
        both = table.loc[table["method"] == a, [*key, "objective_s"]].merge(
            table.loc[table["method"] == b, [*key, "objective_s"]], on=key,
            suffixes=("", "_b")).dropna().set_index(key)
        for objective, grp in both.groupby(level="objective", sort=True):
            ratio = grp["objective_s"] / grp["objective_s_b"]
            lower = 100 * (1 - ratio)
            rows.append({"A": a, "B": b, "objective": objective, "runs": len(grp),
                         "A / B (geometric mean)": math.exp(float(np.log(ratio).mean())),
                         "A lower by % (mean)": lower.mean(), "min %": lower.min(),
                         "max %": lower.max(), "A lower": int((ratio < 1 - 1e-9).sum()),
                         "equal": int((abs(ratio - 1) <= 1e-9).sum()),
                         "A higher": int((ratio > 1 + 1e-9).sum())})
    return pd.DataFrame(rows)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _markdown(frame: pd.DataFrame, index: bool = False) -> str:
    if frame.empty:
        return "(no rows)"
    if index:
        frame = frame.reset_index()
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |"
              for row in frame.itertuples(index=False, name=None)]
    return "\n".join(lines)


def markdown_report(table: pd.DataFrame, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The summary, the counts of plans below a proven optimum and of runs called optimal
    above one (each a bug if not 0), the
    :func:`pairwise` comparisons of ``pairs`` and the per-instance gaps (period and latency) as
    Markdown tables."""
    below = int((table["gap_pct"] < -AT_OPTIMUM_PCT).sum())
    above = int(((table["status"] == "optimal") & (table["gap_pct"] > AT_OPTIMUM_PCT)).sum())
    parts = ["### Each method against the proven optima", "", _markdown(method_summary(table)),
             "", f"Plans better than a proven optimum: {below} (must be 0). Runs called optimal "
             f"but above a proven optimum: {above} (must be 0)."]
    if pairs:
        parts += ["", "### Method against method (runs where both have a plan)", "",
                  _markdown(pairwise(table, pairs))]
    for objective in ("bottleneck", "latency"):
        matrix = gap_matrix(table, objective)
        if not matrix.empty:
            parts += ["", f"### Gap to the proven optimum per instance, {objective} (%)", "",
                      _markdown(matrix, index=True)]
    return "\n".join(parts)


# --- figures ------------------------------------------------------------------------------------

def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _gap_boxes(table: pd.DataFrame) -> Figure | None:
    known = table[table["gap_pct"].notna()]
    objectives = sorted(known["objective"].unique())
    if not objectives:
        return None
    fig = _figure(11, 3.6 * len(objectives))
    for ax, objective in zip(fig.subplots(len(objectives), 1, squeeze=False)[:, 0], objectives,
                             strict=True):
        rows = known[known["objective"] == objective]
        methods = sorted(rows["method"].unique())
        # a gap of 0 cannot sit on a log axis: show gap + 0.01 percentage points
        ax.boxplot([rows.loc[rows["method"] == m, "gap_pct"] + 0.01 for m in methods],
                   tick_labels=methods, showfliers=True)
        ax.set_yscale("log")
        ax.set_ylabel("gap % + 0.01 (log)")
        ax.set_title(f"{objective}: gap to the proven optimum per method")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", linewidth=0.3)
    return fig


def _gap_vs_size(table: pd.DataFrame) -> Figure | None:
    known = table[table["gap_pct"].notna()]
    if known.empty:
        return None
    fig = _figure(11, 4.5)
    ax = fig.subplots()
    for k, (method, rows) in enumerate(known.groupby("method")):
        ax.scatter(rows["layers"] * rows["devices"], rows["gap_pct"] + 0.01, s=14,
                   label=method, color=f"C{k % 10}", marker="os^vD"[k // 10 % 5], alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("instance size: layers x devices (log)")
    ax.set_ylabel("gap % + 0.01 (log)")
    ax.set_title("gap to the proven optimum against instance size (both objectives)")
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def _times(table: pd.DataFrame) -> Figure | None:
    rows = table[table["wall_s"].notna() & (table["wall_s"] > 0)]
    if rows.empty:
        return None
    backends = sorted(rows["backend"].unique())
    fig = _figure(11, 4.2)
    ax = fig.subplots()
    ax.boxplot([rows.loc[rows["backend"] == b, "wall_s"] for b in backends],
               tick_labels=backends, showfliers=True)
    ax.set_yscale("log")
    ax.set_ylabel("wall time per run (s, log)")
    ax.set_title("solve time per backend (the method, or the backend that answered for auto)")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(True, axis="y", linewidth=0.3)
    return fig


def _pareto_figures(pareto: pd.DataFrame) -> list[tuple[str, Figure]]:
    out = []
    for name, rows in pareto.groupby("instance", sort=True):
        fig = _figure(7, 4.5)
        plot_pareto(rows, fig.subplots(), f"{name}: Pareto front ({len(rows)} points)")
        out.append((str(name), fig))
    return out


def _family_plans(table: pd.DataFrame) -> list[tuple[str, Figure | str]]:
    """Per family: the best period plan on its largest instance (a figure, or why none)."""
    out: list[tuple[str, Figure | str]] = []
    planned = table[(table["plan"] != "") & (table["objective"] == "bottleneck")]
    planned = planned.assign(family=planned["family"].replace("", "other"))
    for family, rows in planned.groupby("family", sort=True):
        size = rows["layers"] * rows["devices"]
        biggest = rows[size == size.max()]
        instance = sorted(biggest["instance"].unique())[0]
        best = biggest[biggest["instance"] == instance].sort_values(["objective_s", "method"])
        row = best.iloc[0]
        try:
            inst = load_instance(row["path"])
        except InputError as err:
            out.append((str(family), f"{instance}: cannot draw ({err})"))
            continue
        plan = Plan.from_dict(json.loads(row["plan"]))
        fig = _figure(11, 1.4 + 0.4 * len(plan.stages))
        plot_timeline(inst, plan, fig.subplots())
        fig.suptitle(f"{family}: {instance}, best period plan ({row['method']})", fontsize=10)
        out.append((str(family), fig))
    return out


# --- the page -----------------------------------------------------------------------------------

def load_pareto(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Pareto points from ``edgepart pareto --json`` files (one object or a list of them), with
    an ``instance`` column; an unreadable file is an :class:`InputError`."""
    rows = []
    for path in paths:
        data = read_json(path)
        for k, front in enumerate(data if isinstance(data, list) else [data]):
            if not isinstance(front, dict) or not isinstance(front.get("points"), list):
                raise InputError(f"{path}: [{k}]: expected an 'edgepart pareto --json' object "
                                 "with 'points'")
            for j, p in enumerate(front["points"]):
                try:
                    rows.append({"instance": str(front.get("instance", path)),
                                 "period_s": float(p["period_s"]),
                                 "latency_s": float(p["latency_s"]),
                                 "proven": bool(p["proven"]), "stages": int(p["stages"])})
                except (KeyError, TypeError, ValueError):
                    raise InputError(f"{path}: [{k}].points[{j}]: needs period_s, latency_s, "
                                     "proven and stages") from None
    return pd.DataFrame(rows, columns=["instance", "period_s", "latency_s", "proven", "stages"])


def _img(fig: Figure | None, alt: str) -> str:
    if fig is None:
        return '<p class="note">No runs with a value to draw.</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def html_report(table: pd.DataFrame, pareto: pd.DataFrame | None = None,
                title: str = "edgepart sweep report") -> str:
    """The page described in the module docstring."""
    summary = method_summary(table)
    notes = (f"{len(table)} runs, {table['instance'].nunique()} instances, "
             f"{table['method'].nunique()} methods; edgepart {__version__}. A run is at the "
             f"optimum when its gap is at most {AT_OPTIMUM_PCT:g}%; gaps are against the suite "
             "manifest's proven optima only. Log-scale gap plots add 0.01 percentage points so "
             "that a gap of 0 can be shown.")
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="note">{html.escape(notes)}</p>',
            _section(SECTIONS[0], summary.to_html(index=False, na_rep="-", float_format=_fmt,
                                                  border=0)),
            _section(SECTIONS[1], _img(_gap_boxes(table), "gap box plots")),
            _section(SECTIONS[2], _img(_gap_vs_size(table), "gap against size")),
            _section(SECTIONS[3], _img(_times(table), "solve time per backend"))]
    fronts = _pareto_figures(pareto) if pareto is not None and not pareto.empty else []
    body.append(_section(SECTIONS[4], "\n".join(
        _img(fig, f"Pareto front of {name}") for name, fig in fronts)
        or '<p class="note">No Pareto table given (edgepart report --pareto FILE.json).</p>'))
    plans = [f"<h3>{html.escape(fam)}</h3>" + (_img(fig, f"plan of {fam}")
                                                if isinstance(fig, Figure)
                                                else f'<p class="note">{html.escape(fig)}</p>')
             for fam, fig in _family_plans(table)]
    body.append(_section(SECTIONS[5], "\n".join(plans) or '<p class="note">No plans.</p>'))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
