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

**The envelope bound** (:func:`envelope_bound`) sees what the work bound cannot: a stage is an
ideal difference, so a device cannot pick the layers its class is relatively good at from all
over the graph, only from a window at each end of its stage. Fix a topological order. Every
ideal :math:`I` has a *signature* :math:`p(I)`, the length of the longest prefix of the order it
contains; then :math:`L_p \subseteq I \subseteq U_p` with :math:`L_p` that prefix and
:math:`U_p` every layer but the descendants of the order's layer :math:`p + 1` (an ideal holding
a descendant holds the layer). A stage :math:`S = I_j \setminus I_{j-1}` of type :math:`t` has
compute :math:`W_t(S) = W_t(I_j) - W_t(I_{j-1}) \ge W_t(L_{p_j}) - W_t(U_{p_{j-1}})`, and a
plan with period below :math:`\theta` has every :math:`W_t(S) \le \theta` (compute is part of
a stage's time under either overlap option; transfers, memory and links are dropped). The
relaxation keeps, per multiset :math:`s` of device types used, an *envelope*
:math:`M_{t'}(s)`: the largest :math:`W_{t'}(U_p)` over the signatures a stage sequence using
:math:`s` may end at, each type :math:`t'` on its own (a further relaxation), with
:math:`M(\emptyset) = 0` and

.. math::

    M_{t'}(s + e_t) = \max \{ W_{t'}(U_p) : W_t(L_p) \le \theta + M_t(s) \},

and :math:`\theta` is met when some :math:`s` with a device of type :math:`t` left has
:math:`W_t(V) - M_t(s) \le \theta`. By induction along a plan's stages,
:math:`M_{t'}(s_j) \ge W_{t'}(U_{p_j})` for every type, so a plan with period :math:`\le
\theta` makes :math:`\theta` met: a :math:`\theta` not met is a bound. On a chain
:math:`L_p = U_p` and this is the exact compute-only DP; on a wide DAG each boundary may
cherry-pick within the window :math:`U_p \setminus L_p` (parallel branches), so the bound is
strong where stages are long against that window (a 2,000-layer NASNet-A on 8 devices: 0.723 s
against the work bound's 0.598 s and the best plan's 0.767 s) and weak where they are short
(994 layers on 32 devices: 2.97 ms against 5.37 ms). A layer its type may not run counts 0 s
there (dropping the restriction keeps it a relaxation). The bisection on :math:`\theta`
compares sums at a relative slack of :data:`ROUNDING` and returns the largest :math:`\theta`
found not met, lowered by the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import highspy
import numpy as np

from edgepart.cost import lower_bound
from edgepart.instance import Instance
from edgepart.solvers.milp import solver_output

__all__ = ["ENVELOPE_LAYERS", "ENVELOPE_STATES", "MAX_LP_ROWS", "ROUNDING", "device_prices",
           "envelope_bound", "evaluate_prices", "quick_bound", "work_bound"]

MAX_LP_ROWS = 2_000_000
"""Most (layer, type) rows the LP may have; beyond it :func:`work_bound` answers 0."""
ROUNDING = 1e-12
"""Relative amount the evaluated bound is lowered by, for the rounding of its sum."""
ENVELOPE_STATES = 20_000
"""Most multisets of device types :func:`envelope_bound` keeps an envelope for (above: 0)."""
ENVELOPE_LAYERS = 5_000
"""Most layers :func:`envelope_bound` takes (its descendant sets grow as their square)."""
ENVELOPE_PRECISION = 1e-4
"""Relative width at which :func:`envelope_bound`'s bisection stops."""


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


def envelope_bound(inst: Instance, order: Sequence[int] | None = None) -> float:
    """The envelope bound on the period over prefix signatures of ``order`` (default: the
    layers' listed order; see the module docstring); 0 with more than :data:`ENVELOPE_STATES`
    multisets of device types or :data:`ENVELOPE_LAYERS` layers."""
    times, counts = _types(inst)
    n_types = len(counts)
    if (math.prod(int(c) + 1 for c in counts) > ENVELOPE_STATES
            or not 0 < len(times) <= ENVELOPE_LAYERS):
        return 0.0
    order = list(range(len(times))) if order is None else list(order)
    times = np.where(np.isfinite(times), times, 0.0)[order]
    lower = np.vstack([np.zeros(n_types), np.cumsum(times, axis=0)])  # W(L_p), p = 0..n
    upper = lower[-1] - _descendant_work(inst, order, times)  # W(U_p), p = 0..n
    by_lower = [np.argsort(lower[:, t], kind="stable") for t in range(n_types)]
    reach = [(lower[by_lower[t], t], np.maximum.accumulate(upper[by_lower[t]], axis=0))
             for t in range(n_types)]
    states = _multisets([int(c) for c in counts])

    def met(theta: float) -> bool:
        slack = theta * (1 + ROUNDING)
        envelope = {states[0]: np.zeros(n_types)}
        for s in states:  # every s after each s - e_t
            m = envelope.get(s)
            if m is None:
                continue
            for t in range(n_types):
                if s[t] == counts[t]:
                    continue
                if lower[-1, t] - m[t] <= slack:
                    return True
                sorted_lower, best_upper = reach[t]
                k = int(np.searchsorted(sorted_lower, m[t] + slack, side="right")) - 1
                if k >= 0:
                    nxt = (*s[:t], s[t] + 1, *s[t + 1:])
                    had = envelope.get(nxt)
                    envelope[nxt] = best_upper[k] if had is None else np.maximum(had,
                                                                               best_upper[k])
        return False

    low, high = 0.0, float(lower[-1].max())
    while high - low > ENVELOPE_PRECISION * high:
        mid = (low + high) / 2
        low, high = (low, mid) if met(mid) else (mid, high)
    return low * (1 - ROUNDING)


def _descendant_work(inst: Instance, order: Sequence[int], times: np.ndarray) -> np.ndarray:
    """(n + 1, T): per prefix length p, the work of the order's layer p + 1 and everything that
    depends on it (0 for p = n)."""
    position = {v: i for i, v in enumerate(order)}
    below = [0] * len(order)  # bit i: position i is a descendant (or the layer itself)
    for i in range(len(order) - 1, -1, -1):
        bits = 1 << i
        for w in inst.model.succ[order[i]]:
            bits |= below[position[w]]
        below[i] = bits
    out = np.zeros((len(order) + 1, times.shape[1]))
    for i, bits in enumerate(below):
        members = [j for j in range(i, len(order)) if bits >> j & 1]
        out[i] = times[members].sum(axis=0)
    return out


def _multisets(counts: Sequence[int]) -> list[tuple[int, ...]]:
    """Every multiset of at most ``counts[t]`` of each type, by total size (so each comes
    after every multiset one smaller)."""
    every = itertools.product(*(range(c + 1) for c in counts))
    return sorted(every, key=sum)


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
