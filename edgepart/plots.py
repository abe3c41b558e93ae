"""Pictures of a comparison: the gap of every method, and a timeline of one plan's pipeline.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no GUI,
no global state), so this works headless and in threads.

The timeline (:func:`plot_timeline`) draws the first few requests through the pipeline in its
steady state: request ``r`` enters stage ``b`` at ``r * P + sum_{c < b} (in_c + C_c)`` (``P`` the
period), receives for ``in_b`` seconds (upper lane, hatched) and computes for ``C_b`` (lower lane,
solid, one colour per request); with overlap, a stage receives the next request while it computes
the current one, which the two lanes show. The sink row shows the final transfer. It is a picture
of the cost model's numbers, not a simulation of queueing.

:func:`plot_measured_timeline` draws what a run measured in the same layout (``edgepart run
--timeline``), so the two can be put one above the other.

The Pareto front (:func:`plot_pareto`) is the least latency reachable at each period: a
staircase, flat from each point to the right until the next point of lower latency, with the
points marked (filled: proven; hollow: not proven).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgepart.compare import Comparison
from edgepart.cost import evaluate
from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = ["plot_gaps", "plot_measured_timeline", "plot_pareto", "plot_timeline",
           "save_comparison_figure", "save_pareto_figure"]


def plot_gaps(frame: pd.DataFrame, ax: Axes, title: str = "") -> None:
    """Bar chart of ``gap_pct`` per method (methods without a plan are listed as 'no plan')."""
    labels = [f"{m}\n(no plan)" if math.isnan(g) else m
              for m, g in zip(frame["method"], frame["gap_pct"], strict=True)]
    gaps = frame["gap_pct"].fillna(0.0)
    bars = ax.bar(range(len(frame)), gaps, color=["tab:green" if g <= 1e-6 else "tab:orange"
                                                   for g in gaps])
    for bar, g, missing in zip(bars, gaps, frame["gap_pct"].isna(), strict=True):
        if not missing:
            ax.annotate(f"{g:.1f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(frame)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("gap to the optimum (%)")
    ax.set_title(title or "gap of each method")


def plot_timeline(inst: Instance, plan: Plan, ax: Axes, requests: int = 3) -> None:
    """Gantt chart of ``requests`` requests through the plan's stages and transfers."""
    m = evaluate(inst, plan)
    rows = [f"{b}: {s.device}" for b, s in enumerate(m.stages)]
    colours = [f"C{r % 10}" for r in range(requests)]
    for r in range(requests):
        t = r * m.bottleneck_s
        for b, s in enumerate(m.stages):
            ax.broken_barh([(t, s.recv_s)], (b - 0.4, 0.38), facecolors="white",
                           edgecolors=colours[r], hatch="///")
            ax.broken_barh([(t + s.recv_s, s.compute_s)], (b + 0.02, 0.38),
                           facecolors=colours[r], edgecolors="black", linewidth=0.3)
            t += s.recv_s + s.compute_s
        if m.sink_recv_s > 0:
            ax.broken_barh([(t, m.sink_recv_s)], (len(m.stages) - 0.4, 0.38),
                           facecolors="white", edgecolors=colours[r], hatch="///")
    if m.sink_recv_s > 0:
        rows.append(f"sink: {inst.sink}")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)   upper lane hatched: receive, lower lane solid: compute; "
                  "one colour per request")
    ax.set_title(f"{plan.method or 'plan'}: period {m.bottleneck_s:.4g} s, "
                 f"latency {m.latency_s:.4g} s")


def plot_measured_timeline(intervals: Sequence[Any], ax: Axes, sink: str = "sink",
                           title: str = "") -> None:
    """Gantt chart of measured intervals in :func:`plot_timeline`'s layout: per stage row, the
    upper lane (hatched) is ``receive``, the lower lane ``compute`` (solid) and ``pad`` (light);
    the last stage's ``send`` is on the sink row. Each interval has ``stage``, ``device``,
    ``request``, ``kind``, ``start_s`` and ``end_s`` (see :mod:`edgepart.runtime.timeline`);
    one colour per request, in request order, as :func:`plot_timeline` colours them."""
    colour = {r: f"C{k % 10}" for k, r in enumerate(sorted({iv.request for iv in intervals}))}
    devices = {iv.stage: iv.device for iv in intervals}
    for iv in intervals:
        span = [(iv.start_s, iv.end_s - iv.start_s)]
        c = colour[iv.request]
        if iv.kind in ("receive", "send"):
            row = iv.stage + 1 if iv.kind == "send" else iv.stage
            ax.broken_barh(span, (row - 0.4, 0.38), facecolors="white", edgecolors=c,
                           hatch="///")
        else:
            ax.broken_barh(span, (iv.stage + 0.02, 0.38), facecolors=c, edgecolors="black",
                           linewidth=0.3, alpha=1.0 if iv.kind == "compute" else 0.35)
    rows = [f"{b}: {devices[b]}" for b in sorted(devices)] + [sink]
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("time (s)   upper lane hatched: receive (link hold + transport), lower lane: "
                  "compute (solid) and padding (light); one colour per request")
    ax.set_title(title or "measured")


def save_comparison_figure(comp: Comparison, inst: Instance, path: str | Path) -> None:
    """The gap chart and the timeline of the optimal (else best) plan, in one PNG."""
    best = comp.optimum or min((r for r in comp.runs if r.result.has_plan),
                               key=lambda r: r.result.objective_s, default=None)
    fig = Figure(figsize=(10, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    gap_ax, time_ax = fig.subplots(2, 1, height_ratios=[1, 1.2])
    what = "optimum" if comp.proven else "best proven bound"
    plot_gaps(comp.frame(), gap_ax, f"{comp.instance}: gap to the {what} "
                                    f"({comp.reference_s:.4g} s, {comp.objective.value})")
    if best is not None and best.result.plan is not None:
        plot_timeline(inst, best.result.plan, time_ax)
    else:
        time_ax.set_axis_off()
    fig.savefig(path, dpi=120)


def plot_pareto(frame: pd.DataFrame, ax: Axes, title: str = "") -> None:
    """Latency against period (ms) of :func:`edgepart.pareto.pareto`'s table, as a staircase."""
    pts = frame.sort_values("period_s")
    period = [p * 1e3 for p in pts["period_s"]]
    latency = [v * 1e3 for v in pts["latency_s"]]
    right = period[-1] + 0.08 * max(period[-1] - period[0], period[-1])
    # for each period the least latency: flat from a point until the next (larger) period
    ax.step([*period, right], [*latency, latency[-1]], where="post", color="tab:blue",
            linewidth=1.5, label="least latency at this period")
    proven = pts["proven"].to_numpy(dtype=bool)
    for mask, face, label in ((proven, "tab:blue", "proven"),
                              (~proven, "white", "not proven")):
        if mask.any():
            ax.scatter([p for p, m in zip(period, mask, strict=True) if m],
                       [v for v, m in zip(latency, mask, strict=True) if m], s=36, zorder=3,
                       facecolors=face, edgecolors="tab:blue", label=label)
    last = None
    for p, v, k in zip(period, latency, pts["stages"], strict=True):
        if k != last:  # label where the stage count changes, so long fronts stay readable
            ax.annotate(f"{k} stage{'s' if k != 1 else ''}", (p, v), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        last = k
    ax.set_xlabel("period (ms per request; 1000 / period = requests per second)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Pareto front of period and latency")


def save_pareto_figure(frame: pd.DataFrame, path: str | Path) -> None:
    """:func:`plot_pareto` in one PNG; the title comes from ``frame.attrs`` when present."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    attrs = frame.attrs
    state = "" if "complete" not in attrs else (
        ", complete" if attrs["complete"] else ", incomplete")
    name = attrs.get("instance", "")
    plot_pareto(frame, ax, f"{name}{': ' if name else ''}Pareto front ({len(frame)} points"
                           f"{state})")
    fig.savefig(path, dpi=120)
