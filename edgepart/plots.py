"""Pictures of a comparison: the gap of every method, and a timeline of one plan's pipeline.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no GUI,
no global state), so this works headless and in threads.

The timeline (:func:`plot_timeline`) draws the first few requests through the pipeline in its
steady state: request ``r`` enters stage ``b`` at ``r * P + sum_{c < b} (in_c + C_c)`` (``P`` the
period), receives for ``in_b`` seconds (upper lane, hatched) and computes for ``C_b`` (lower lane,
solid, one colour per request); with overlap, a stage receives the next request while it computes
the current one, which the two lanes show. The sink row shows the final transfer. It is a picture
of the cost model's numbers, not a simulation of queueing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgepart.compare import Comparison
from edgepart.cost import evaluate
from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = ["plot_gaps", "plot_timeline", "save_comparison_figure"]


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
