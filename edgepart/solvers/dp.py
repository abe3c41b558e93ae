r"""Exact dynamic programmes over pipeline cuts: ``dp`` (ranges) and ``dp_ideals`` (ideals).

Model. A plan is a chain of *cuts* :math:`\emptyset = I_0 \subsetneq I_1 \subsetneq \dots
\subsetneq I_k = V`, each a predecessor-closed set of layers; stage :math:`b` runs
:math:`I_{b+1} \setminus I_b` on device :math:`d_b` (all distinct). In relay mode (see
:mod:`edgepart.cost`) the boundary after stage :math:`b` carries the bytes :math:`B(I_{b+1})` of
every tensor produced inside :math:`I_{b+1}` and consumed outside it, as one message
:math:`R_b = \tau_{d_b d_{b+1}}(B(I_{b+1}))`, so a stage's time depends only on its own layer set,
its device and its two neighbours' devices. With overlap the period is
:math:`\max(\max_b C_b, \max_b R_b)`, which a DP with state *(cut, devices used, device of the
last stage)* minimises exactly:

.. math::

    A[J][S][d] = \min_u \max(H[J][S][u],\ \tau_{u d}(B(J))), \qquad
    H[I][S + d][d] = \min_{J \subsetneq I} \max(A[J][S][d],\ C_d(I \setminus J))

(:math:`C_d = \infty` where a layer may not run on :math:`d` or the stage does not fit in its
memory, buffers included). The latency :math:`\sum_b C_b + \sum_b R_b` is the same DP with
``+`` for ``max``. Without overlap a stage costs :math:`R_{b-1} + C_b + R_b`, which couples three
devices; we bisect on the period :math:`P`: plan exists iff the DP keeping, per state, the
*smallest incoming transfer* among prefixes whose stages all meet :math:`P` reaches the end
(monotone: a smaller incoming transfer never hurts later stages). Each feasible answer lowers the
upper bound to its plan's period; an infeasible one raises the proven lower bound.

Devices that are interchangeable (same class, memory and speed, same links to every other device
and to the source and sink, and neither the source nor the sink) are merged into *types*, as in
PipeEdge: the "devices used" set becomes a multiset, :math:`S = \prod_t (c_t + 1)` states instead
of :math:`2^D`, and the plan maps types back to devices in order.

Families of cuts.

* ``dp``: prefixes of the given topological order (every stage is a range). Exact for every plan
  on a chain (where every plan is a range plan, and relay and direct transfers coincide), so it
  reports ``OPTIMAL`` only when ``inst.model.is_chain``; on a DAG the best range plan is a heuristic
  (``FINISHED``, no bound). Time :math:`O(n^2 S T + n S T^2)` per pass, memory :math:`O(n S T)`.
* ``dp_ideals``: every ideal (predecessor-closed set) of the DAG, as in Tarnawski et al.'s DP.
  Exact on any DAG in relay mode (and on chains); with direct transfers on a DAG a tensor's cost
  depends on the devices of non-adjacent stages, so the relay boundary is only a proxy and the
  result is ``FINISHED``. Time :math:`O(P S T + M S T^2)` per pass plus :math:`O(M^2 n)` bit
  operations to find the :math:`P \le M^2/2` pairs of :math:`M` ideals.

Colocation is honoured by using only cuts that split no colocate group. Refusals (``UNSUPPORTED``,
with the numbers) beyond :data:`MAX_CELLS` stored states, :data:`MAX_WORK` state updates per pass
or :data:`MAX_IDEALS` ideals. With overlap, a latency cap on the period objective is a bisection
on the period over latency passes whose arcs are capped (:func:`_latency_capped`); without overlap
bicriteria requests are refused.

References
----------
.. [1] Y. Hu et al., "PipeEdge: Pipeline Parallelism for Large-Scale Model Inference on
   Heterogeneous Edge Devices", DSD 2022 (DP over layers, device-type multiset, next type).
.. [2] J. Tarnawski, A. Phanishayee, N. Devanur, D. Mahajan, F. Nina Paravecino, "Efficient
   Algorithms for Device Placement of DNN Graph Operators", NeurIPS 2020 (DP over ideals).
.. [3] SNU-RTOS/DNNPipe (DP over layers and device subsets with bound pruning).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from edgepart.cost import tolerated
from edgepart.cuts import (
    MAX_IDEALS,
    CutCosts,
    CutFamily,
    DeviceTypes,
    ideal_family,
    path_plan,
    prefix_family,
)
from edgepart.instance import Instance, Transfer
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import Objective, SolveOptions, finish, register

__all__ = [
    "BISECTION_TOL",
    "MAX_CELLS",
    "MAX_WORK",
    "DPOutcome",
    "optimise",
    "path_times",
    "run_family",
    "solve_dp",
    "solve_dp_ideals",
]

MAX_CELLS = 6_000_000
"""Most (cut, device state, type) cells kept (two float arrays of this size)."""
MAX_WORK = 500_000_000
"""Most (cut pair, device state, type) updates in one pass of the DP."""
BISECTION_TOL = 1e-8
"""Relative gap at which the bisection on the period (no overlap) stops."""

_CHUNK = 2_000_000  # elements of one vectorised block


# ---------------------------------------------------------------------------------------------
# The DP engine
# ---------------------------------------------------------------------------------------------


class Mode(Enum):
    BOTTLENECK = "bottleneck"  # min max(transfers, computes): the period with overlap
    LATENCY = "latency"  # min sum of transfers and computes (stage parts each <= cap)
    FEASIBLE = "feasible"  # min incoming transfer with every stage's in + compute + out <= cap


class _Timeout(Exception):
    pass


class _Pass:
    """One DP pass, run on construction: its mode, the cap (period limit; ``inf`` for none) and
    its tables ``h[I][S][t]`` (best value with the last stage, of type t, ending at cut I) and
    ``a[I][S][t]`` (best entry value of a stage of type t starting after cut I).

    Raises
    ------
    _Timeout
        When the deadline passes.
    """

    def __init__(self, prob: CutCosts, mode: Mode, cap: float, deadline: float) -> None:
        self.prob, self.mode, self.cap = prob, mode, cap
        m, s, t = prob.family.size, prob.types.n_states, prob.types.n_types
        self.h = np.full((m, s, t), np.inf)
        self.a = np.full((m, s, t), np.inf)
        self._run(deadline)

    def _run(self, deadline: float) -> None:
        m = self.prob.family.size
        self.a[0, 0] = self._capped(self.prob.src)
        for i in range(1, m):
            if time.perf_counter() > deadline:
                raise _Timeout
            self.h[i] = self._pull(i)
            if i < m - 1:
                self.a[i] = self.link_value(self.h[i][:, :, None],
                                            self.prob.cross(i)[None]).min(axis=1)

    def _capped(self, x: np.ndarray) -> np.ndarray:
        return np.where(x <= self.cap, x, np.inf) if self.mode is Mode.LATENCY else x

    def combine(self, a: np.ndarray, comp: np.ndarray) -> np.ndarray:
        """Value after adding a stage of compute ``comp`` to an entry value ``a``."""
        if self.mode is Mode.BOTTLENECK:
            return np.maximum(a, comp)
        return a + self._capped(comp)

    def link_value(self, h: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Entry value of the next stage after a transfer ``tau`` from a state of value ``h``."""
        if self.mode is Mode.BOTTLENECK:
            return np.maximum(h, tau)
        if self.mode is Mode.LATENCY:
            return h + self._capped(tau)
        return np.where(h + tau <= self.cap, tau, np.inf)

    def _pull(self, i: int) -> np.ndarray:
        types = self.prob.types
        js = self.prob.family.subs[i]
        best = np.full((types.n_states, types.n_types), np.inf)
        step = max(1, _CHUNK // best.size)
        for k in range(0, len(js), step):
            chunk = js[k:k + step]
            # prefix families have contiguous sub-cuts: a slice avoids copying A
            rows = (self.a[chunk[0]:chunk[-1] + 1] if chunk[-1] - chunk[0] + 1 == len(chunk)
                    else self.a[chunk])
            vals = self.combine(rows, self.prob.stage(i, chunk)[:, None, :])
            np.minimum(best, vals.min(axis=0), out=best)
        out = np.full_like(best, np.inf)
        for t, states in enumerate(types.addable):
            out[states + types.strides[t], t] = best[states, t]
        return out

    def finals(self) -> np.ndarray:
        """(S, T): objective of each complete state (after the sink transfer)."""
        h, snk = self.h[-1], self.prob.snk[None, :]
        if self.mode is Mode.FEASIBLE:
            return np.where(h + snk <= self.cap, h + snk, np.inf)
        return self.link_value(h, snk)

    def backtrack(self) -> list[tuple[int, int, int]] | None:
        """The best complete plan as stages ``(J, I, type)`` in order, or ``None``."""
        fin = self.finals()
        if not np.isfinite(fin).any():
            return None
        s, t = (int(x) for x in np.unravel_index(np.argmin(fin), fin.shape))
        i, path = self.prob.family.size - 1, []
        while True:
            js = self.prob.family.subs[i]
            s -= int(self.prob.types.strides[t])
            j = int(js[np.argmin(self.combine(self.a[js, s, t], self.prob.stage(i, js)[:, t]))])
            path.append((j, i, t))
            if j == 0:
                return path[::-1]
            i, t = j, int(np.argmin(self.link_value(self.h[j, s], self.prob.cross(j)[:, t])))


@dataclass(frozen=True)
class DPOutcome:
    """The DP's answer in its own model: a path of stages ``(J, I, type)``, its value, the proven
    lower bound (``value`` when solved; less after a timeout) and the number of passes."""

    path: tuple[tuple[int, int, int], ...] | None
    value: float
    bound: float
    passes: int
    timed_out: bool = False


def path_times(prob: CutCosts, path: Sequence[tuple[int, int, int]]
               ) -> tuple[list[float], list[float]]:
    """Per stage compute seconds and the k + 1 transfers (source, cuts, sink) of a path."""
    comp = [float(prob.stage(i, np.array([j]))[0, t]) for j, i, t in path]
    comm = [float(prob.src[path[0][2]])]
    comm += [float(prob.cross(i)[t, path[b + 1][2]]) for b, (_, i, t) in enumerate(path[:-1])]
    comm.append(float(prob.snk[path[-1][2]]))
    return comp, comm


def _serial_period(prob: CutCosts, path: Sequence[tuple[int, int, int]]) -> float:
    comp, comm = path_times(prob, path)
    return max(comm[b] + c + comm[b + 1] for b, c in enumerate(comp))


def optimise(prob: CutCosts, objective: Objective, overlap: bool, deadline: float = math.inf,
             max_period: float | None = None, max_latency: float | None = None) -> DPOutcome:
    """Minimise the period (or latency) over the problem's cut family, exactly in its model.

    Raises
    ------
    ValueError
        For a period cap on the latency objective, or a latency cap on the period, without
        overlap (not a DP of this form).
    """
    # the checker's tolerance: a stage the evaluator puts at the cap may sum a hair above it here
    cap = math.inf if max_period is None else tolerated(max_period)
    if objective is Objective.BOTTLENECK and max_latency is not None:
        if not overlap:
            raise ValueError("a latency cap on the period without overlap couples neighbouring "
                             "stages; use cpsat")
        return _latency_capped(prob, tolerated(max_latency), deadline)
    try:
        if objective is Objective.LATENCY:
            if cap < math.inf and not overlap:
                raise ValueError("a period cap on latency without overlap couples neighbouring "
                                 "stages; use cpsat")
            return _single(_Pass(prob, Mode.LATENCY, cap, deadline))
        first = _single(_Pass(prob, Mode.BOTTLENECK, math.inf, deadline))
    except _Timeout:
        return DPOutcome(None, math.inf, -math.inf, 0, timed_out=True)
    if overlap or first.path is None:
        return first
    return _bisect(prob, first, deadline)


def _single(p: _Pass) -> DPOutcome:
    path = p.backtrack()
    if path is None:
        return DPOutcome(None, math.inf, math.inf, 1)
    value = float(p.finals().min())
    return DPOutcome(tuple(path), value, value, 1)


def _latency_capped(prob: CutCosts, max_latency: float, deadline: float) -> DPOutcome:
    r"""The least period among plans of latency at most ``max_latency`` (with overlap).

    With overlap a plan's period is its largest arc time, so "some plan has period
    :math:`\le p` and latency :math:`\le L`" is "the latency DP with every arc capped at p
    reaches :math:`\le L`", which is monotone in p. Bisect p over the arc times (the values a
    period can take) between the unconstrained period optimum (a lower bound) and the period of
    the best plan found; each feasible answer lowers the upper bound to that plan's own period,
    each infeasible one proves that the period is at least the next arc time."""
    try:
        fastest = _single(_Pass(prob, Mode.LATENCY, math.inf, deadline))
        if fastest.path is None or fastest.value > max_latency:
            return DPOutcome(None, math.inf, math.inf, 1)  # no plan meets the latency cap
        lo = _single(_Pass(prob, Mode.BOTTLENECK, math.inf, deadline)).value
    except _Timeout:
        return DPOutcome(None, math.inf, -math.inf, 0, timed_out=True)
    best, hi, passes = fastest.path, _overlap_period(prob, fastest.path), 2
    values = _arc_times(prob)
    while True:
        # the period is one of the arc times: bisect over those in [lo, hi)
        open_ = values[(values >= lo * (1 - BISECTION_TOL)) & (values < hi * (1 - BISECTION_TOL))]
        if not len(open_):  # every arc time below hi (within the tolerance) is refuted
            return DPOutcome(best, hi, hi * (1 - BISECTION_TOL), passes)
        mid = float(open_[len(open_) // 2])
        try:
            out = _single(_Pass(prob, Mode.LATENCY, mid, deadline))
        except _Timeout:
            return DPOutcome(best, hi, lo, passes, timed_out=True)
        passes += 1
        if out.path is None or out.value > max_latency:
            above = values[values > mid]
            lo = float(above[0]) if len(above) else hi  # nothing between mid and the next
        else:
            best, hi = out.path, min(mid, _overlap_period(prob, out.path))


def _arc_times(prob: CutCosts) -> np.ndarray:
    """Every value a plan's period can take with overlap, sorted: stage computes, transfers
    across cuts, the source's and the sink's transfers."""
    parts = [prob.src, prob.snk]
    last = prob.family.size - 1
    for i in range(1, last + 1):
        parts.append(prob.stage(i, prob.family.subs[i]).ravel())
        if i < last:
            parts.append(prob.cross(i).ravel())
    values = np.concatenate(parts)
    return np.unique(values[np.isfinite(values)])


def _overlap_period(prob: CutCosts, path: Sequence[tuple[int, int, int]]) -> float:
    comp, comm = path_times(prob, path)
    return max(*comp, *comm)


def _bisect(prob: CutCosts, first: DPOutcome, deadline: float) -> DPOutcome:
    """Without overlap: the overlapped optimum is a lower bound (max <= sum); bisect up from it."""
    assert first.path is not None
    best, lo = first.path, first.value
    hi = _serial_period(prob, best)
    passes = 1
    while hi - lo > BISECTION_TOL * hi:
        mid = 0.5 * (lo + hi)
        try:
            path = _Pass(prob, Mode.FEASIBLE, mid, deadline).backtrack()
        except _Timeout:
            return DPOutcome(best, hi, lo, passes, timed_out=True)
        passes += 1
        if path is None:
            lo = mid
        else:
            best, hi = tuple(path), min(mid, _serial_period(prob, path))
    return DPOutcome(best, hi, lo, passes)


# ---------------------------------------------------------------------------------------------
# Registered methods
# ---------------------------------------------------------------------------------------------


def _refusal(inst: Instance, options: SolveOptions) -> str:
    if (options.objective is Objective.BOTTLENECK and options.max_latency is not None
            and (options.max_period is not None or not inst.cost_model.overlap)):
        return ("a latency cap on the period objective without overlap (or with a period cap "
                "too) couples neighbouring stages; use cpsat")
    if (options.objective is Objective.LATENCY and options.max_period is not None
            and not inst.cost_model.overlap):
        return ("a period cap on latency without overlap couples neighbouring stages; "
                "use cpsat")
    return ""


def _size_refusal(family: CutFamily, types: DeviceTypes) -> str:
    per_cut = types.n_states * types.n_types
    cells, work = family.size * per_cut, family.pairs * per_cut
    if cells > MAX_CELLS or work > MAX_WORK:
        return (f"{family.size} cuts x {types.n_states} device states x {types.n_types} device "
                f"types = {cells:.3g} cells and {work:.3g} updates per pass (limits "
                f"{MAX_CELLS:.3g} and {MAX_WORK:.3g}; devices differ too much to be merged)")
    return ""


def run_family(inst: Instance, options: SolveOptions, method: str, family: CutFamily | None,
               exact: bool, start: float, why_not: str = "") -> SolveResult:
    """Run the DP on ``family`` with every device and package the answer for ``method``."""
    types = DeviceTypes.of(inst, range(len(inst.devices)))
    refusal = why_not or _refusal(inst, options) or (
        _size_refusal(family, types) if family is not None else "")
    if refusal or family is None:
        return finish(inst, None, method=method, options=options,
                      termination=Termination.UNSUPPORTED, message=f"{method}: {refusal}")
    prob = CutCosts.of(inst, family, types)
    deadline = start + options.time_limit if options.time_limit else math.inf
    out = optimise(prob, options.objective, inst.cost_model.overlap, deadline, options.max_period,
                   options.max_latency)
    extra = {"cuts": family.size, "cut_pairs": family.pairs, "device_types": types.n_types,
             "device_states": types.n_states, "passes": out.passes}
    over_cap = (options.objective is Objective.BOTTLENECK and options.max_period is not None
                and out.value > tolerated(options.max_period))
    plan = None if out.path is None or over_cap else path_plan(inst, prob, out.path)
    wall = time.perf_counter() - start
    if out.timed_out:
        return finish(inst, plan, method=method, options=options,
                      termination=Termination.TIME_LIMIT, bound=out.bound if exact else -math.inf,
                      wall_time_s=wall, exact=exact, extra=extra,
                      message=f"stopped at the time limit ({options.time_limit} s)")
    if plan is None:
        return finish(inst, None, method=method, options=options,
                      termination=Termination.INFEASIBLE if exact else Termination.FINISHED,
                      wall_time_s=wall, extra=extra,
                      message="no plan over these cuts meets memory, device classes, colocation "
                              "and the limits")
    return finish(inst, plan, method=method, options=options,
                  termination=Termination.OPTIMAL if exact else Termination.FINISHED,
                  bound=out.bound if exact else -math.inf, wall_time_s=wall, exact=exact,
                  extra=extra, message="" if exact else _heuristic_note(method))


def _heuristic_note(method: str) -> str:
    if method == "dp":
        return "exact over range plans; the DAG may have better non-range plans"
    return "direct transfers on a DAG: the DP charges relay boundaries, so it proves nothing"


@register("dp")
def solve_dp(inst: Instance, options: SolveOptions) -> SolveResult:
    """Exact DP over range plans (see the module docstring); optimal when the model is a chain."""
    start = time.perf_counter()
    return run_family(inst, options, "dp", prefix_family(inst), inst.model.is_chain, start)


@register("dp_ideals")
def solve_dp_ideals(inst: Instance, options: SolveOptions) -> SolveResult:
    """Exact DP over ideals (see the module docstring); refuses beyond :data:`MAX_IDEALS`."""
    start = time.perf_counter()
    family = ideal_family(inst)
    why = "" if family is not None else (
        f"the layer graph has more than {MAX_IDEALS} ideals (too wide to enumerate)")
    exact = inst.cost_model.transfer is Transfer.RELAY or inst.model.is_chain
    return run_family(inst, options, "dp_ideals", family, exact, start, why)
