r"""What the heuristics (and the exact DP) share: range plans over the layer order and their cost.

A *range plan* cuts the given topological layer order at positions
:math:`0 = c_0 < c_1 < \dots < c_k = n` (stage :math:`b` runs layers :math:`c_b .. c_{b+1}-1`)
and puts stage :math:`b` on device :math:`d_b` (all distinct). :class:`RangeModel` answers the cost
of one stage in O(1) (compute, from prefix sums) or O(range) (memory), so heuristics can score
thousands of candidate plans without building :class:`~edgepart.plan.Plan` objects.

Its transfers are the relay model of :mod:`edgepart.cost`: the cut at position :math:`j` carries the
bytes :math:`B_j` of every tensor produced before :math:`j` and consumed at or after :math:`j`
(skip tensors included, the request input at :math:`j = 0` when there is a source, the model
outputs at :math:`j = n` when there is a sink), as one message between consecutive stages. For
relay transfers, and for every chain, this is exactly the shared evaluator's cost; for direct
transfers on a DAG it is a proxy (a skip tensor is charged at every cut it crosses, on the link
between neighbouring stages), and every final plan is re-scored by :func:`edgepart.cost.evaluate`
through :func:`finish_heuristic`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepart.cost import tolerated, validate_plan
from edgepart.cuts import alive_bytes, colocation_cut_ok
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import SolveOptions, finish

__all__ = [
    "RangeModel",
    "RangePlan",
    "balanced_cuts",
    "device_speed",
    "finish_heuristic",
]




@dataclass(frozen=True, slots=True)
class RangePlan:
    """Cut positions ``0 = cuts[0] < ... < cuts[-1] = n`` and one distinct device per stage."""

    cuts: tuple[int, ...]
    devices: tuple[int, ...]

    def to_plan(self, inst: Instance, method: str = "") -> Plan:
        stage_of = np.repeat(np.arange(len(self.devices)), np.diff(self.cuts))
        return Plan.from_assignment(inst, stage_of.tolist(), self.devices, method)


class RangeModel:
    """Prefix data over the layer order: the cost of a range of layers on a device in O(1).

    Parameters
    ----------
    inst : Instance
        The instance; its topological layer order defines the ranges.
    """

    def __init__(self, inst: Instance) -> None:
        g = inst.model
        self.inst = inst
        self.n = n = len(g.layers)
        self.nd = len(inst.devices)
        times = np.array(inst.times, dtype=float).reshape(n, self.nd)
        runs = np.isfinite(times)
        zero = np.zeros((1, self.nd))
        self.times = times
        self._cum_time = np.vstack([zero, np.cumsum(np.where(runs, times, 0.0), axis=0)])
        self._cum_bad = np.vstack([zero, np.cumsum(~runs, axis=0)])
        self._cum_param = np.concatenate([[0.0], np.cumsum([x.param_bytes for x in g.layers])])
        self._work = np.array([x.work_bytes for x in g.layers])
        prefixes = np.arange(n)[None, :] < np.arange(n + 1)[:, None]
        self.boundary = alive_bytes(inst, prefixes)
        self.cut_ok = colocation_cut_ok(inst)
        self.lat = np.array([[link.latency_s for link in row] for row in inst.links])
        self.bw = np.array([[link.bandwidth_bytes_per_s for link in row] for row in inst.links])
        self.capacity = np.array([d.memory_bytes for d in inst.devices])
        self.src = inst.source_index
        self.snk = inst.sink_index
        self._fits: dict[tuple[int, int, int], bool] = {}
        self._range_costs: dict[tuple[bytes, int], np.ndarray] = {}

    def compute(self, i: int, j: int, d: int) -> float:
        """Seconds of layers ``i..j-1`` on device ``d`` (``inf`` if one may not run there)."""
        if self._cum_bad[j, d] > self._cum_bad[i, d]:
            return math.inf
        return float(self._cum_time[j, d] - self._cum_time[i, d])

    def memory(self, i: int, j: int, d: int) -> float:
        """Bytes stage ``i..j-1`` needs on device ``d``: parameters, largest working set, the
        receive buffer (unless it is the first stage and ``d`` is the source) and the send buffer
        (unless it is the last stage and ``d`` is the sink)."""
        return float(self.memory_row(i, np.array([j]), d)[0])

    def range_costs(self, pos: np.ndarray, d: int) -> np.ndarray:
        """``out[a, b]``: compute seconds of layers ``pos[a]..pos[b]-1`` on device ``d``, or
        ``inf`` when ``a >= b``, a layer may not run on ``d`` or the stage does not fit
        (memoised per ``pos`` and ``d``: do not modify the result)."""
        key = (pos.tobytes(), d)
        if key not in self._range_costs:
            self._range_costs[key] = self._range_costs_of(pos, d)
        return self._range_costs[key]

    def _range_costs_of(self, pos: np.ndarray, d: int) -> np.ndarray:
        comp = self._cum_time[pos, d][None, :] - self._cum_time[pos, d][:, None]
        bad = self._cum_bad[pos, d][None, :] > self._cum_bad[pos, d][:, None]
        order = pos[None, :] <= pos[:, None]
        mem = np.stack([self.memory_row(int(i), pos, d) for i in pos])
        return np.where(order | bad | (mem > tolerated(float(self.capacity[d]))), np.inf, comp)

    def memory_row(self, i: int, js: np.ndarray, d: int = -1) -> np.ndarray:
        """:meth:`memory` of layers ``i..j-1`` on ``d`` for every ``j`` in ``js`` (``-1``: a
        device that is neither the source nor the sink); entries with ``j <= i`` are ``inf``."""
        run = np.maximum.accumulate(self._work[i:]) if i < self.n else np.zeros(0)
        top = np.where(js > i, run[np.clip(js - i - 1, 0, max(len(run) - 1, 0))]
                       if len(run) else 0.0, np.inf)
        recv = self.boundary[i] if i > 0 or d != self.src else 0.0
        send = np.where((js < self.n) | (d != self.snk), self.boundary[js], 0.0)
        return np.asarray(self._cum_param[js] - self._cum_param[i] + top + recv + send)

    def fits(self, i: int, j: int, d: int) -> bool:
        """Layers ``i..j-1`` may all run on ``d`` and fit in its memory (memoised)."""
        key = (i, j, d)
        if key not in self._fits:
            self._fits[key] = (math.isfinite(self.compute(i, j, d))
                               and self.memory(i, j, d) <= tolerated(float(self.capacity[d])))
        return self._fits[key]

    def valid(self, rp: RangePlan) -> bool:
        """Every cut splits no colocate group and every stage fits its device."""
        c = rp.cuts
        return (len(set(rp.devices)) == len(rp.devices) and all(self.cut_ok[j] for j in c)
                and all(c[b] < c[b + 1] and self.fits(c[b], c[b + 1], d)
                        for b, d in enumerate(rp.devices)))

    def link_time(self, a: int | None, b: int | None, nbytes: float) -> float:
        """One message of ``nbytes`` from device ``a`` to ``b`` (0 on one device or no end)."""
        if a is None or b is None or a == b:
            return 0.0
        return float(self.lat[a, b] + nbytes / self.bw[a, b])

    def parts(self, rp: RangePlan) -> tuple[list[float], list[float]]:
        """Per stage compute seconds, and the k + 1 boundary transfers (source, cuts, sink)."""
        ends = [self.src, *rp.devices, self.snk]
        comm = [self.link_time(ends[b], ends[b + 1], self.boundary[c])
                for b, c in enumerate(rp.cuts)]
        comp = [self.compute(rp.cuts[b], rp.cuts[b + 1], d) for b, d in enumerate(rp.devices)]
        return comp, comm

    def stage_times(self, rp: RangePlan) -> list[float]:
        """Each stage's time: max (or, without overlap, sum) of receive, compute and send."""
        comp, comm = self.parts(rp)
        if self.inst.cost_model.overlap:
            return [max(comm[b], c, comm[b + 1]) for b, c in enumerate(comp)]
        return [comm[b] + c + comm[b + 1] for b, c in enumerate(comp)]

    def period(self, rp: RangePlan) -> float:
        return max(self.stage_times(rp))

    def latency(self, rp: RangePlan) -> float:
        comp, comm = self.parts(rp)
        return sum(comp) + sum(comm)

    def objective(self, rp: RangePlan, name: str) -> float:
        return self.latency(rp) if name == "latency" else self.period(rp)


def device_speed(inst: Instance) -> np.ndarray:
    """A scalar speed per device: 1 / (its time for every layer it may run), normalised so the
    fastest device has speed 1 (layers it may not run count at the slowest device's time)."""
    times = np.array(inst.times, dtype=float).reshape(len(inst.model.layers), len(inst.devices))
    worst = np.where(np.isfinite(times), times, -np.inf).max(axis=1, keepdims=True)
    worst = np.where(np.isfinite(worst), worst, 0.0)
    total = np.where(np.isfinite(times), times, worst).sum(axis=0)
    speed = 1.0 / np.maximum(total, 1e-300)
    return np.asarray(speed / speed.max())


def balanced_cuts(weights: np.ndarray, k: int, cut_ok: np.ndarray) -> tuple[int, ...] | None:
    """Cut positions splitting ``weights`` into ``k`` contiguous non-empty parts of about equal
    sum: the b-th cut is the allowed position whose prefix sum is nearest ``b / k`` of the total.

    Returns ``None`` when fewer than ``k - 1`` allowed cut positions exist.
    """
    n = len(weights)
    allowed = [j for j in range(1, n) if cut_ok[j]]
    if k < 1 or len(allowed) < k - 1:
        return None
    level = np.concatenate([[0.0], np.cumsum(weights)])
    if level[-1] <= 0:
        level = np.arange(n + 1, dtype=float)
    cuts = [0]
    first = 0  # index into ``allowed`` of the first position still free
    for b in range(1, k):
        room = range(first, len(allowed) - (k - 1 - b))  # leave one position per later cut
        pick = min(room, key=lambda a: abs(level[allowed[a]] - level[-1] * b / k))
        cuts.append(allowed[pick])
        first = pick + 1
    return (*cuts, n)


def finish_heuristic(inst: Instance, plan: Plan | None, *, method: str, options: SolveOptions,
                     start: float, message: str = "", extra: dict[str, Any] | None = None
                     ) -> SolveResult:
    """Package a heuristic's plan: validated and scored by the shared evaluator, no proof."""
    if plan is None and not message:
        message = f"{method} found no valid plan"
    return finish(inst, plan, method=method, options=options, termination=Termination.FINISHED,
                  wall_time_s=time.perf_counter() - start, message=message, extra=extra)


def finish_fixed_rule(inst: Instance, plan: Plan, *, method: str, options: SolveOptions,
                      start: float, extra: dict[str, Any] | None = None) -> SolveResult:
    """A plan made by a fixed rule that ignores some of the instance's limits (memory, device
    classes, transfer mode): scored when it keeps them, else no plan with the first reason, as
    the tool that uses the rule would fail to deploy it."""
    problems = validate_plan(inst, plan)
    if problems:
        return finish_heuristic(inst, None, method=method, options=options, start=start,
                                message=f"{method}'s plan breaks the instance's rules: "
                                        f"{problems[0]}", extra=extra)
    return finish_heuristic(inst, plan, method=method, options=options, start=start,
                            extra=extra)
