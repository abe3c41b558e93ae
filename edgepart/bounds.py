r"""Lower bounds on the period that hold for every plan: the fractional work bound, by LP.

Every plan does each layer :math:`v` somewhere: a pipeline stage on one device, a device group
in shares (:mod:`edgepart.solvers.groups`). Let :math:`x_{v,d} \ge 0`, :math:`\sum_d x_{v,d} = 1`,
be the share of layer :math:`v` that device :math:`d` does; device :math:`d` is then busy
:math:`W_d = \sum_v x_{v,d}\, t(v, d)` per request, and :math:`W_d \le P` (a stage's compute is at
most its time, which is at most the period; transfers only add). For any prices
:math:`y_d \ge 0` with :math:`\sum_d y_d = 1`,

.. math::

    P = \sum_d y_d P \ge \sum_d y_d W_d = \sum_v \sum_d x_{v,d}\, y_d\, t(v, d)
      \ge \sum_v \min_d y_d\, t(v, d),

the minimum over the devices that may run :math:`v`. The best prices give the optimum of the
LP :math:`\min P` s.t. :math:`\sum_d x_{v,d} = 1`, :math:`W_d \le P` (LP duality): the bound a
schedule gets when every layer could be cut into pieces and spread with no transfer, memory or
contiguity cost. It is at least :func:`edgepart.cost.lower_bound`'s work term (that one is this
formula at prices :math:`y_d \propto s_d`) and far above it when classes disagree layer by layer
(a 1,000-layer chain on 32 devices of four classes: 46.6 ms against 35.5 ms; the optimum is 52.8).

Devices whose time columns are equal share one price (a *type* :math:`t` of :math:`n_t`
devices: :math:`\sum_t n_t y_t = 1`), so the LP has one row per (layer, type) pair a layer may
run on. HiGHS only *chooses* the prices: the bound is then evaluated from them in plain floating
point (negative prices clipped, the sum renormalised, the result lowered by
:data:`ROUNDING` relative), so it is valid whatever the LP solver's tolerances.
"""

from __future__ import annotations

import math

import highspy
import numpy as np

from edgepart.cost import lower_bound
from edgepart.instance import Instance
from edgepart.solvers.milp import solver_output

__all__ = ["MAX_LP_ROWS", "ROUNDING", "device_prices", "evaluate_prices", "quick_bound",
           "work_bound"]

MAX_LP_ROWS = 2_000_000
"""Most (layer, type) rows the LP may have; beyond it :func:`work_bound` answers 0."""
ROUNDING = 1e-12
"""Relative amount the evaluated bound is lowered by, for the rounding of its sum."""


def quick_bound(inst: Instance, objective: str = "bottleneck") -> float:
    """The best quick lower bound on every plan's period (:func:`edgepart.cost.lower_bound` and
    :func:`work_bound`) or, for ``objective="latency"``, latency."""
    if objective == "latency":
        return lower_bound(inst, objective)
    return max(lower_bound(inst), work_bound(inst))


def work_bound(inst: Instance) -> float:
    """The fractional work bound on the period (see the module docstring); 0 when the LP is too
    large (:data:`MAX_LP_ROWS`) or finds no prices."""
    times, counts = _types(inst)
    prices = _column_prices(times, counts)
    return 0.0 if prices is None else evaluate_prices(times, counts, prices)


def device_prices(inst: Instance) -> np.ndarray | None:
    r"""The work bound's prices per device (:math:`y_d \ge 0`, :math:`\sum_d y_d = 1`; equal
    on devices with equal time columns), or ``None`` where :func:`work_bound` finds none."""
    times, counts = _types(inst)
    prices = _column_prices(times, counts)
    y = None if prices is None else np.clip(prices, 0.0, None)
    if y is None or not counts @ y > 0:
        return None
    column = {c: i for i, c in enumerate(dict.fromkeys(zip(*inst.times, strict=True)))}
    return np.array([y[column[c]] for c in zip(*inst.times, strict=True)]) / (counts @ y)


def _column_prices(times: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """:func:`_lp_prices`, or ``None`` when the LP would be too large."""
    if not times.size or np.isfinite(times).sum() > MAX_LP_ROWS:
        return None
    return _lp_prices(times, counts)


def evaluate_prices(times: np.ndarray, counts: np.ndarray, prices: np.ndarray) -> float:
    r""":math:`\sum_v \min_t y_t\, t(v, t)` at prices ``prices`` per device of each type,
    normalised to :math:`\sum_t n_t y_t = 1` (a layer no type may run adds nothing)."""
    y = np.clip(prices, 0.0, None)
    total = float(counts @ y)
    if not total > 0:
        return 0.0
    y = y / total
    with np.errstate(invalid="ignore"):  # 0 * inf where a zero price meets a forbidden type
        cost = np.where(np.isfinite(times), times * y[None, :], np.inf).min(axis=1)
    return math.fsum(c for c in cost.tolist() if math.isfinite(c)) * (1 - ROUNDING)


def _types(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) seconds per layer and type of devices with equal time columns, and the counts."""
    columns: dict[tuple[float, ...], int] = {}
    for column in zip(*inst.times, strict=True):
        columns[column] = columns.get(column, 0) + 1
    times = np.array(list(columns), dtype=float).T.reshape(len(inst.model.layers), len(columns))
    return times, np.array(list(columns.values()), dtype=float)


def _lp_prices(times: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    r"""Prices maximising the bound: :math:`\max \sum_v u_v` s.t. :math:`u_v \le y_t\,
    t(v, t)` where :math:`v` may run on :math:`t`, :math:`\sum_t n_t y_t = 1`, :math:`y \ge 0`
    (:math:`u` free; a layer that no type may run is left out)."""
    n, nt = times.shape
    v_idx, t_idx = np.nonzero(np.isfinite(times))
    if not len(v_idx):
        return None
    runs = np.zeros(n, dtype=bool)
    runs[v_idx] = True
    with solver_output(False):  # HiGHS prints a banner when the first one is made
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    # columns: y_0..y_{T-1}, then u_v for every layer v
    h.addVars(nt, np.zeros(nt), np.full(nt, inf))
    h.addVars(n, np.full(n, -inf), np.where(runs, inf, 0.0))
    h.changeColsCost(n, np.arange(nt, nt + n, dtype=np.int32), np.full(n, -1.0))
    rows = len(v_idx)  # u_v - t(v, t) y_t <= 0
    starts = np.arange(0, 2 * rows, 2, dtype=np.int32)
    index = np.column_stack([nt + v_idx, t_idx]).ravel().astype(np.int32)
    coef = np.column_stack([np.ones(rows), -times[v_idx, t_idx]]).ravel()
    h.addRows(rows, np.full(rows, -inf), np.zeros(rows), len(index), starts, index, coef)
    h.addRow(1.0, 1.0, nt, np.arange(nt, dtype=np.int32), counts)
    with solver_output(False):
        h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return np.array(h.getSolution().col_value[:nt])
