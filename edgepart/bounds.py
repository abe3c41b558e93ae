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

**Over the ideals, with their transfers.** The same recursion holds with the ideals themselves in
place of the signatures (key and value the ideal's own work vector :math:`W(I)`: no window to
cherry-pick from), and an ideal can be a plan's boundary at period :math:`\theta` only if its
message fits: with relay transfers the boundary :math:`I` sends its alive bytes :math:`B(I)` in
one message, which takes at least :math:`\lambda_{\min} + B(I) / bw_{\max}` over the links
(the least latency and the largest bandwidth of any two devices), and that is part of the
sending stage's time under either overlap option; without overlap it adds to the stage's
compute, so it is added to the key. (Direct transfers send per tensor: no condition.) An ideal
whose message is longer than :math:`\theta` drops out, so where a boundary inside a cell of a
wide DAG holds many tensors, only the cheap boundaries near the cells' ends remain. The
recursion over the ideals is still a relaxation (a stage may go from any ideal to any later one
whose key is within :math:`\theta` of the type's reach, whether or not it contains it), and it
is exactly the set version: the ideals reachable with :math:`s + e_t` depend on those reachable
with :math:`s` only through their largest :math:`W_t`, which the envelope keeps. Every ideal of
signature :math:`p` is :math:`L_p` plus a predecessor-closed subset of its window, enumerated
as a 64-bit mask (windows of at most :data:`ENVELOPE_WINDOW` layers, at most
:data:`ENVELOPE_IDEALS` ideals; else only the signature pass runs). Measured on the 994-layer
NASNet-A on 32 devices (Ethernet, 6,769,480 ideals; 2.6 s to enumerate, 6.3 s in all): 6.66 ms
against the signature pass's 2.97 ms, the work bound's 5.37 ms and the best plan's 6.81 ms.

**The witness.** Where the ideal pass meets a :math:`\theta`, walking the recursion back from the
multiset that finishes gives a sequence of stages (end row, type): each ends at a row whose value
is the envelope value the next stage starts from, and its key is within :math:`\theta` of the
envelope value it starts from itself (found by the sweep's own test on the envelopes the
bisection kept from its sweep at that :math:`\theta`). :func:`envelope` does that once, at the
least :math:`\theta` it met, and makes a plan of it: stage :math:`j` runs the union of the ends
up to its own minus the union before it (so the stages nest even where the ends do not), on the next
unused device of its type. The plan is evaluated and validated by the caller like any other. On
a chain whose links are all equal, with overlap, the relaxation is the problem itself minus
memory and the source's and sink's transfers (every ideal is a prefix, so ends nest; a boundary's
least transfer is its transfer), so the witness is an optimal plan and the bound proves it: a
2,000-layer chain and a 1,994-layer BERT on 64 devices, which no solver proved in 60 s, in
15-17 s (the BERT's ideals nest there too). On a wide DAG the ends do not nest and the plan is
far off (NASNet-A, 508 layers on 16 devices: 167.6 ms against the optimum 106.47 ms; two of its
15 ends drop 2 and 4 layers of the end before, and a beam search over nested ends with the
witness's sequence of types found nothing below 137 ms: the slack is the relaxation's own).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np

from edgepart.cost import lower_bound
from edgepart.formulations.model import NO_DEADLINE, Deadline, OutOfTime
from edgepart.instance import Instance, Transfer
from edgepart.plan import Plan
from edgepart.results import OPTIMALITY_TOL
from edgepart.solvers.milp import solver_output

__all__ = ["ENVELOPE_IDEALS", "ENVELOPE_LAYERS", "ENVELOPE_STATES", "ENVELOPE_WINDOW",
           "MAX_LP_ROWS", "ROUNDING", "device_prices", "envelope_bound", "evaluate_prices",
           "quick_bound", "work_bound"]

MAX_LP_ROWS = 2_000_000
"""Most (layer, type) rows the LP may have; beyond it :func:`work_bound` answers 0."""
ROUNDING = 1e-12
"""Relative amount the evaluated bound is lowered by, for the rounding of its sum."""
ENVELOPE_STATES = 100_000
"""Most multisets of device types :func:`envelope` keeps an envelope for (above: bound 0): 64
devices of four classes (50,625) take about 0.3 s a question."""
ENVELOPE_LAYERS = 5_000
"""Most layers :func:`envelope_bound` takes (its descendant sets grow as their square)."""
ENVELOPE_PRECISION = 1e-7
"""Relative width at which :func:`envelope_bound`'s bisection stops."""
ENVELOPE_IDEALS = 8_000_000
"""Most ideals :func:`envelope_bound` enumerates (about 100 bytes each while it runs); beyond,
the prefix signatures only."""
ENVELOPE_WINDOW = 63
"""Most layers in one signature's window for the ideal pass (its subsets are 64-bit masks)."""


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


@dataclass(frozen=True)
class Envelope:
    """What :func:`envelope` found: ``bound``, a lower bound on every plan's period, and
    ``plan``, the relaxation's witness at the least period it met made into a plan (``None``
    where the ideal pass did not run or met nothing below ``upper``). The plan is only a
    candidate: it has not been evaluated or validated."""

    bound: float
    plan: Plan | None = None


def envelope_bound(inst: Instance, order: Sequence[int] | None = None,
                   upper: float | None = None, deadline: Deadline = NO_DEADLINE) -> float:
    """:func:`envelope`'s bound alone."""
    return envelope(inst, order, upper, deadline).bound


def envelope(inst: Instance, order: Sequence[int] | None = None, upper: float | None = None,
             deadline: Deadline = NO_DEADLINE, lower: float = 0.0) -> Envelope:
    """The envelope bound on the period (see the module docstring): over the ideals themselves
    where there are at most :data:`ENVELOPE_IDEALS` of them, else (or when the deadline stopped
    that pass) over the prefix signatures of ``order`` (default: the layers' listed order).
    ``upper``: the period of a known plan (the bisection looks below it, and tries just below it
    first, so a bound that meets it proves the plan); ``deadline``: the ideal pass stops there
    with the best bound it proved; ``lower``: a lower bound on every plan's period known
    already, where the bisection starts. Bound 0 with more than :data:`ENVELOPE_STATES`
    multisets of device types or :data:`ENVELOPE_LAYERS` layers.

    The ideal pass also returns the witness of the least period it met, as a plan (module
    docstring, *The witness*)."""
    times, counts = _types(inst)
    if (math.prod(int(c) + 1 for c in counts) > ENVELOPE_STATES
            or not 0 < len(times) <= ENVELOPE_LAYERS):
        return Envelope(0.0)
    order = list(range(len(times))) if order is None else list(order)
    times = np.where(np.isfinite(times), times, 0.0)
    below = _descendants(inst, order)
    search = _Envelope(counts, times.sum(axis=0))
    high = float(times.sum(axis=0).max()) if upper is None else upper
    try:
        ideals = _ideal_points(inst, order, times, below, upper, deadline)
    except OutOfTime:
        ideals = None
    low, plan = min(lower, high), None
    if ideals is not None:
        low, met = search.largest_unmet(  # without upper, high is one stage of the slowest type
            ideals, low, high, deadline, probe_top=upper is not None, high_met=upper is None)
        plan = None if met is None else _witness_plan(inst, ideals, search.witness(ideals, met))
    if ideals is None or deadline.left() < 0:  # the signatures' bound is weaker, and quick
        low = max(low, search.largest_unmet(_signature_points(order, times, below), low, high,
                                            NO_DEADLINE)[0])
    return Envelope(low * (1 - ROUNDING), plan)


def _witness_plan(inst: Instance, points: _Points, stages: Sequence[tuple[int, int]]) -> Plan:
    """The plan of a witness (its stages' end rows and device types, in order; the last ends at
    the full set): stage j runs the union of the ends up to its own minus the union before it
    (so the stages nest even where the relaxation's ends do not), on the next device of its
    type not used yet."""
    assert points.ideals is not None
    free = [list(m) for m in _type_members(inst)]
    stage_of = np.full(len(inst.model.layers), -1)
    done = np.zeros(len(inst.model.layers), dtype=bool)
    devices = []
    for j, (row, t) in enumerate(stages):
        end = points.ideals.layers(row) | done
        stage_of[end & ~done] = j
        done = end
        devices.append(free[t].pop(0))
    return Plan.from_assignment(inst, stage_of.tolist(), devices, "envelope witness")


@dataclass
class _Points:
    """Candidate stage ends for the envelope. A stage of type ``t`` may end at row ``r`` when
    its key ``keys[r, t]`` is at most theta above the reach of type ``t`` so far, and then the
    reach of every type becomes at least ``values[r]``; no plan of period theta has a boundary
    at a row whose ``tau`` (a lower bound on that boundary's transfer) is above theta. Stored
    per type in key order: ``rows[t]`` (row numbers) and ``sorted_keys[t]``. ``ideals``: the
    layer set of each row, where rows are ideals (row 0 the empty set)."""

    values: np.ndarray
    rows: tuple[np.ndarray, ...]
    sorted_keys: tuple[np.ndarray, ...]
    tau: np.ndarray
    tau_in_key: bool
    ideals: _IdealRows | None = None
    _last: tuple[int, _Reach] | None = None

    @classmethod
    def of(cls, values: np.ndarray, tau: np.ndarray, tau_in_key: bool,
           ideals: _IdealRows | None = None, keys: np.ndarray | None = None) -> _Points:
        """Rows with these values; each key is the value, plus ``tau`` where ``tau_in_key``
        (or ``keys``, given: then :meth:`key` does not apply)."""
        if keys is None:
            keys = values + tau[:, None] if tau_in_key else values
        # equal keys in any order (a query takes every row up to a key): quicksort, 2-2.5x
        # faster than a stable sort here
        rows = tuple(np.argsort(keys[:, t]).astype(np.int64) for t in range(keys.shape[1]))
        return cls(values, rows, tuple(keys[r, t] for t, r in enumerate(rows)), tau,
                   tau_in_key, ideals)

    def key(self, row: int, t: int) -> float:
        """Row ``row``'s key for type ``t``, where :meth:`of` computed the keys (the same sum
        in the same order)."""
        value = self.values[row, t]
        return float(value + self.tau[row] if self.tau_in_key else value)

    def reach(self, theta: float) -> _Reach:
        """The reach structure of the rows that may be boundaries below ``theta``; the last one
        is kept while the number of such rows stays the same (most of a bisection's questions,
        and all of them where every row may be a boundary)."""
        admissible = self.tau <= theta
        count = int(admissible.sum())
        if self._last is None or self._last[0] != count:
            self._last = (count, _Reach.of(self, None if count == len(self.tau) else admissible))
        return self._last[1]


_BLOCK = 32
"""Rows per block of :class:`_Reach` (a query scans at most one block)."""


@dataclass
class _Reach:
    """Per type, the prefix maxima of the admissible rows' values in key order, by blocks of
    :data:`_BLOCK` rows (the last partial block is scanned at query time)."""

    points: _Points
    admissible: np.ndarray | None
    prefix: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, points: _Points, admissible: np.ndarray | None) -> _Reach:
        n_types = points.values.shape[1]
        prefix = []
        for rows in points.rows:
            full = len(rows) // _BLOCK * _BLOCK
            vals = points.values[rows[:full]]
            if admissible is not None:
                vals[~admissible[rows[:full]]] = -np.inf
            blocks = vals.reshape(-1, _BLOCK, n_types).max(axis=1, initial=-np.inf)
            prefix.append(np.maximum.accumulate(blocks, axis=0))
        return cls(points, admissible, tuple(prefix))

    def best(self, t: int, keys: np.ndarray) -> np.ndarray:
        """Per key, the largest values (per type) over the admissible rows whose key for type
        ``t`` is at most it (``-inf`` where there is none): the block prefix, then the rows of
        the last partial block."""
        n_types = self.points.values.shape[1]
        k = np.searchsorted(self.points.sorted_keys[t], keys, side="right")
        blocks = k // _BLOCK
        out = np.full((len(k), n_types), -np.inf)
        some = blocks > 0
        out[some] = self.prefix[t][blocks[some] - 1]
        lengths = k - blocks * _BLOCK
        width = int(lengths.max(initial=0))
        if width:
            offset = np.arange(width)
            valid = offset[None, :] < lengths[:, None]
            rows = self.points.rows[t][np.where(valid, blocks[:, None] * _BLOCK + offset, 0)]
            if self.admissible is not None:
                valid &= self.admissible[rows]
            tail = np.where(valid[..., None], self.points.values[rows], -np.inf)
            out = np.maximum(out, tail.max(axis=1))
        return out


@dataclass(frozen=True)
class _Met:
    """A theta the envelope recursion met: the multiset and type of the stage that finished,
    and the envelopes of the sweep then (what :meth:`_Envelope.witness` walks back)."""

    theta: float
    end: tuple[int, int]
    envelope: np.ndarray


@dataclass
class _Envelope:
    """The envelope recursion over the multisets of device types (module docstring), a level
    (multiset size) at a time: ``states[i]`` is multiset ``i`` (mixed radix, ``strides``)."""

    counts: np.ndarray
    total: np.ndarray
    states: np.ndarray = field(init=False)
    strides: np.ndarray = field(init=False)
    levels: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        counts = [int(c) for c in self.counts]
        self.states = np.array(list(itertools.product(*(range(c + 1) for c in counts))),
                               dtype=np.int64).reshape(-1, len(counts))
        self.strides = np.array([math.prod(c + 1 for c in counts[t + 1:])
                                 for t in range(len(counts))], dtype=np.int64)
        size = self.states.sum(axis=1)
        self.levels = [np.flatnonzero(size == k) for k in range(int(size.max(initial=0)) + 1)]

    def largest_unmet(self, points: _Points, low: float, high: float, deadline: Deadline,
                      probe_top: bool = False, high_met: bool = False
                      ) -> tuple[float, _Met | None]:
        """The largest theta in ``[low, high]`` found not met (``low`` is taken as not met),
        bisected to :data:`ENVELOPE_PRECISION`, and the sweep of the least theta found met
        (``None``: none; ``high_met``: ``high`` is met, and is swept at the end when nothing
        below it was); with ``probe_top``, theta just below ``high`` is asked first (within
        :data:`~edgepart.results.OPTIMALITY_TOL`). Stops at the deadline with what it has."""
        met = None
        try:
            top = high * (1 - OPTIMALITY_TOL / 2)
            if probe_top and top > low:
                met = self._met(points, top, deadline)
                if met is None:
                    return top, None
                high = top
            while high - low > ENVELOPE_PRECISION * high:
                mid = (low + high) / 2
                found = self._met(points, mid, deadline)
                if found is None:
                    low = mid
                else:
                    met, high = found, mid
            if met is None and high_met:
                met = self._met(points, high, deadline)
        except OutOfTime:
            pass
        return low, met

    def witness(self, points: _Points, met: _Met) -> list[tuple[int, int]]:
        """The stages (end row, device type) of a sequence that meets ``met.theta``, in order
        (the last ends at the full set): from the multiset that finishes back to the empty one,
        each stage ends at a row whose value is the envelope value the next stage started from,
        and is within theta of the envelope value it started from itself."""
        slack = met.theta * (1 + ROUNDING)
        admissible = points.tau <= slack
        state, t = met.end
        stages = [(len(points.values) - 1, t)]
        while state:
            row, t, state = self._stage_to(points, met.envelope, state, t, slack, admissible)
            stages.append((row, t))
        return stages[::-1]

    def _met(self, points: _Points, theta: float, deadline: Deadline) -> _Met | None:
        """The sweep at ``theta`` where it ends every layer within it, else ``None``."""
        end, envelope = self._sweep(points, theta, deadline)
        return None if end is None else _Met(theta, end, envelope)

    def _stage_to(self, points: _Points, envelope: np.ndarray, state: int, t: int,
                  slack: float, admissible: np.ndarray) -> tuple[int, int, int]:
        """A stage the sweep took to reach multiset ``state`` at an admissible row whose value
        for type ``t`` is ``envelope[state, t]``: (that row, the stage's type, the multiset
        before it). The sweep's own test, so some row and stage always pass it."""
        for row in np.flatnonzero((points.values[:, t] == envelope[state, t]) & admissible):
            for u in np.flatnonzero(self.states[state] > 0):
                before = state - int(self.strides[u])
                if points.key(int(row), int(u)) <= envelope[before, u] + slack:
                    return int(row), int(u), before
        raise AssertionError("an envelope value that no stage reached")

    def _sweep(self, points: _Points, theta: float, deadline: Deadline
               ) -> tuple[tuple[int, int] | None, np.ndarray]:
        """The multiset and type of a last stage that ends every layer within ``theta`` (or
        ``None``) by the recursion over the levels, and the envelopes so far
        (``envelope[i]``: the reach of multiset ``i``)."""
        slack = theta * (1 + ROUNDING)
        reach = points.reach(slack)
        envelope = np.full((len(self.states), len(self.counts)), -np.inf)
        envelope[0] = 0.0
        for level in self.levels:
            deadline.check()
            level = level[np.isfinite(envelope[level, 0])]
            for t, count in enumerate(self.counts):
                free = level[self.states[level, t] < count]
                if not len(free):
                    continue
                m = envelope[free, t]
                done = np.flatnonzero(self.total[t] - m <= slack)
                if len(done):
                    return (int(free[done[0]]), t), envelope
                best = reach.best(t, m + slack)
                found = np.isfinite(best[:, 0])
                nxt = free[found] + self.strides[t]
                envelope[nxt] = np.maximum(envelope[nxt], best[found])
        return None, envelope


def _signature_points(order: Sequence[int], times: np.ndarray, below: Sequence[int]
                      ) -> _Points:
    """Per prefix length p = 0..n of ``order``: key W(L_p), value W(U_p), no transfer."""
    ordered = times[list(order)]
    lower = np.vstack([np.zeros(times.shape[1]), np.cumsum(ordered, axis=0)])  # W(L_p)
    upper = lower.copy()  # W(U_p) = W(V) - the work of the order's layer p + 1's descendants
    for p, bits in enumerate(below):
        upper[p] = lower[-1] - ordered[[j for j in range(p, len(order)) if bits >> j & 1]].sum(
            axis=0)
    return _Points.of(upper, np.zeros(len(lower)), False, keys=lower)


def _descendants(inst: Instance, order: Sequence[int]) -> list[int]:
    """Per position i of ``order``, a bit mask over positions: the order's layer i and every
    layer that depends on it."""
    position = {v: i for i, v in enumerate(order)}
    below = [0] * len(order)
    for i in range(len(order) - 1, -1, -1):
        bits = 1 << i
        for w in inst.model.succ[order[i]]:
            bits |= below[position[w]]
        below[i] = bits
    return below


def _ideal_points(inst: Instance, order: Sequence[int], times: np.ndarray,
                  below: Sequence[int], upper: float | None, deadline: Deadline
                  ) -> _Points | None:
    """Every ideal as a row: key and value its work per type W(I) (without overlap the key
    adds the boundary's least transfer), ``tau`` that transfer (relay; 0 for direct transfers
    and at the empty and the full set). Rows whose transfer exceeds ``upper`` are left out (no
    boundary of a plan better than ``upper``). ``None`` beyond :data:`ENVELOPE_IDEALS` ideals
    or where a signature's window has more than :data:`ENVELOPE_WINDOW` layers."""
    windows = _Windows(inst, order, times, below)
    rows_w, rows_tau = [np.zeros((1, times.shape[1]))], [np.zeros(1)]  # the empty set
    rows_p, rows_mask = [np.zeros(1, dtype=np.int32)], [np.zeros(1, dtype=np.uint64)]
    layers = []
    count = 1
    cap = math.inf if upper is None else upper * (1 + ROUNDING)
    for p, window in enumerate(windows.each()):
        deadline.check()
        if window is None:
            return None
        count += len(window.nbytes)
        if count > ENVELOPE_IDEALS:
            return None
        tau = windows.transfer(window.nbytes)
        keep = tau <= cap
        rows_w.append(window.work[keep])
        rows_tau.append(tau[keep])
        rows_p.append(np.full(int(keep.sum()), p, dtype=np.int32))
        rows_mask.append(window.sets[keep])
        layers.append(window.layers)
    rows_w.append(times.sum(axis=0)[None])  # the full set
    rows_tau.append(np.zeros(1))
    ideals = _IdealRows(order, layers, np.concatenate(rows_p), np.concatenate(rows_mask))
    return _Points.of(np.concatenate(rows_w), np.concatenate(rows_tau),
                      not inst.cost_model.overlap, ideals)


@dataclass(frozen=True)
class _IdealRows:
    """The layer sets of the ideal pass's rows: row 0 is the empty set, the last the full set,
    every other the order's first ``p = signature[r]`` layers plus the layers of ``windows[p]``
    picked by the bits of ``mask[r]``."""

    order: Sequence[int]
    windows: list[list[int]]
    signature: np.ndarray
    mask: np.ndarray

    def layers(self, row: int) -> np.ndarray:
        """(n,) bool: the layers of row ``row``'s ideal."""
        n = len(self.order)
        out = np.zeros(n, dtype=bool)
        if row >= len(self.signature):  # the full set
            out[:] = True
            return out
        if row == 0:
            return out
        p, mask = int(self.signature[row]), int(self.mask[row])
        out[list(self.order[:p])] = True
        out[[v for j, v in enumerate(self.windows[p]) if mask >> j & 1]] = True
        return out


@dataclass(frozen=True)
class _SignatureIdeals:
    """The ideals of one signature: their work per type, relay bytes alive and masks over the
    window's ``layers``."""

    work: np.ndarray
    nbytes: np.ndarray
    sets: np.ndarray
    layers: list[int]


@dataclass
class _Windows:
    """The ideals of signature p, p = 0..n-1, one window at a time. An ideal of signature p is
    the order's first p layers L_p plus a set X of the window U_p minus L_p (every layer
    neither in L_p nor depending on the order's layer p + 1) closed under predecessors; X is
    enumerated as a bit mask over the window."""

    inst: Instance
    order: Sequence[int]
    times: np.ndarray
    below: Sequence[int]
    min_latency: float = 0.0
    max_bandwidth: float = math.inf
    relay: bool = True

    def __post_init__(self) -> None:
        links = [self.inst.link(i, j) for i in range(len(self.inst.devices))
                 for j in range(len(self.inst.devices)) if i != j]
        if links:
            self.min_latency = min(link.latency_s for link in links)
            self.max_bandwidth = max(link.bandwidth_bytes_per_s for link in links)
        self.relay = self.inst.cost_model.transfer is Transfer.RELAY

    def transfer(self, nbytes: np.ndarray) -> np.ndarray:
        """A lower bound on sending ``nbytes`` between any two devices (0: direct transfers,
        whose boundary is not one message)."""
        if not self.relay:
            return np.zeros_like(nbytes)
        return self.min_latency + nbytes / self.max_bandwidth

    def each(self) -> Iterator[_SignatureIdeals | None]:
        """Per signature p = 0..n-1 in turn, its ideals, or ``None`` when its window is wider
        than :data:`ENVELOPE_WINDOW` layers. L_p, its work
        and its *frontier* (the layers whose tensor may still leave it) grow one layer a time."""
        g = self.inst.model
        inside: set[int] = set()
        frontier: set[int] = set()
        work = np.zeros(self.times.shape[1])
        for p, v in enumerate(self.order):
            yield self._window(p, inside, frontier, work)
            inside.add(v)
            work = work + self.times[v]
            if g.succ[v] or self.inst.sink is not None:
                frontier.add(v)
            frontier -= {u for u in g.pred[v] if all(w in inside for w in g.succ[u])}

    def _window(self, p: int, inside: set[int], frontier: set[int], prefix_work: np.ndarray
                ) -> _SignatureIdeals | None:
        """The ideals of signature ``p`` (L_p = ``inside``, whose work is ``prefix_work``)."""
        g, order = self.inst.model, self.order
        bits = ((1 << len(order)) - 1) & ~self.below[p] & ~((1 << p) - 1)
        if bits.bit_count() > ENVELOPE_WINDOW:
            return None
        window = [order[i] for i in range(p, len(order)) if bits >> i & 1]
        local = {v: j for j, v in enumerate(window)}
        sets = np.zeros(1, dtype=np.uint64)
        for j, v in enumerate(window):  # topological: each layer after its predecessors
            need = np.uint64(sum(1 << local[u] for u in g.pred[v] if u in local))
            sets = np.concatenate([sets, sets[(sets & need) == need] | np.uint64(1 << j)])
        member = ((sets[:, None] >> np.arange(len(window), dtype=np.uint64)[None]) & np.uint64(1)
                  ).astype(bool)
        work = prefix_work + member.astype(float) @ self.times[window]
        nbytes = self._alive(sets, member, window, local, inside, sorted(frontier))
        return _SignatureIdeals(work, nbytes, sets, window)

    def _alive(self, sets: np.ndarray, member: np.ndarray, window: list[int],
               local: dict[int, int], inside: set[int], frontier: list[int]) -> np.ndarray:
        """Relay bytes alive across each ideal (:func:`edgepart.cuts.alive_bytes`): a tensor
        made inside with a consumer outside (or a model output, with a sink), the request input
        while an entry is outside (with a source)."""
        g, inst = self.inst.model, self.inst
        nbytes = np.zeros(len(sets))
        for u in frontier + window:
            made = member[:, local[u]] if u in local else True
            later = [w for w in g.succ[u] if w not in inside]
            if not g.succ[u]:
                leaves = inst.sink is not None
            elif all(w in local for w in later):
                used = np.uint64(sum(1 << local[w] for w in later))
                leaves = (sets & used) != used
            else:
                leaves = True
            nbytes += g.tensor_bytes[u] * (made & leaves)
        if inst.source is not None:
            entries = list(g.entries)
            if all(e in inside or e in local for e in entries):
                read = np.uint64(sum(1 << local[e] for e in entries if e in local))
                nbytes += g.input_bytes * ((sets & read) != read)
            else:
                nbytes += g.input_bytes
        return nbytes


def device_prices(inst: Instance) -> np.ndarray | None:
    r"""The work bound's prices per device (:math:`y_d \ge 0`, :math:`\sum_d y_d = 1`; equal
    on devices with equal time columns), or ``None`` where :func:`work_bound` finds none."""
    times, counts = _types(inst)
    prices = _column_prices(times, counts)
    y = None if prices is None else np.clip(prices, 0.0, None)
    if y is None or not counts @ y > 0:
        return None
    per_device = np.empty(len(inst.devices))
    for price, members in zip(y, _type_members(inst), strict=True):
        per_device[members] = price
    return per_device / (counts @ y)


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


def _type_members(inst: Instance) -> list[list[int]]:
    """The devices of each of :func:`_types`'s types (equal time columns), in that order."""
    members: dict[tuple[float, ...], list[int]] = {}
    for d, column in enumerate(zip(*inst.times, strict=True)):
        members.setdefault(column, []).append(d)
    return list(members.values())


def _types(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) seconds per layer and type of devices with equal time columns, and the counts."""
    members = _type_members(inst)
    times = np.array(inst.times, dtype=float).reshape(len(inst.model.layers), len(inst.devices))
    return times[:, [m[0] for m in members]], np.array([len(m) for m in members], dtype=float)


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
