"""The LLM tools' splits next to the proven optimum, in tokens/s (``edgepart llm table``).

For each instance: :func:`edgepart.compare.run_comparison` with the exact ``auto`` reference and
the baselines :data:`BASELINES` (exo, llama.cpp even and by memory, memory first), every plan
scored by the one evaluator, under the objective that is the workload's rate
(:func:`workload_objective`). A row per method: whether its split fits, the decode rate with the
pipeline saturated (:math:`1/P`), one sequence's rate (:math:`1/L`), the time to first token
(prefill), and how much slower than the optimum it is, :math:`100 (1 - r / r^*)` percent of the
rate :math:`r = 1 / \text{objective}`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from edgepart.compare import MethodRun, run_comparison
from edgepart.instance import Instance, Workload, load_instance
from edgepart.llm.rates import llm_rates
from edgepart.solvers.base import Objective

__all__ = ["BASELINES", "TABLE_COLUMNS", "baseline_table", "markdown_table", "workload_objective"]

BASELINES = ("exo", "llamacpp", "llamacpp_memory", "memory_first")
TABLE_COLUMNS = ("instance", "objective", "method", "fits", "tokens_per_s",
                 "single_sequence_tokens_per_s", "time_to_first_token_s", "slower_pct", "status",
                 "note")


def workload_objective(workload: Workload | None) -> Objective:
    """The objective whose inverse is the workload's rate: one sequence's tokens/s (latency)
    when one sequence is resident, the time to first token (latency) for prefill, else the
    saturated tokens/s of the cluster (the period)."""
    if workload is not None and (workload.phase == "prefill" or workload.batch == 1):
        return Objective.LATENCY
    return Objective.BOTTLENECK


def baseline_table(instances: Iterable[Instance | str | Path],
                   methods: Sequence[str] = BASELINES, time_limit: float = 60.0
                   ) -> pd.DataFrame:
    """One row per (instance, method): the exact optimum first, then ``methods``."""
    rows: list[dict[str, Any]] = []
    for item in instances:
        inst = item if isinstance(item, Instance) else load_instance(item)
        objective = workload_objective(inst.workload)
        comp = run_comparison(inst, methods, ("auto",), time_limit=time_limit,
                              objective=objective)
        best = comp.optimum
        rows.extend(_row(inst, run, objective, best.result.objective_s if best else math.nan)
                    for run in comp.runs)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _row(inst: Instance, run: MethodRun, objective: Objective, best_s: float
         ) -> dict[str, Any]:
    m = run.result.metrics
    row: dict[str, Any] = {"instance": inst.name, "objective": objective.value,
                           "method": run.method, "fits": m is not None, "status": run.status,
                           "note": run.result.message}
    rates = None if m is None else llm_rates(inst, m)
    if m is None or rates is None:
        return row
    if rates.workload.phase == "prefill":
        row["time_to_first_token_s"] = m.latency_s
    else:
        row["tokens_per_s"] = rates.saturated_tokens_per_s
        row["single_sequence_tokens_per_s"] = 1.0 / m.latency_s
    row["slower_pct"] = 100.0 * (1.0 - best_s / m.objective(objective.value))
    return row


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table (numbers to 4 significant digits, NaN empty)."""
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
