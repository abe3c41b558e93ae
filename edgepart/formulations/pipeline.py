r"""The exact pipeline-partition model (one formulation, read by every MILP and CP-SAT backend).

Sets: layers :math:`v \in V` (topological order), devices :math:`d \in D`, stage slots
:math:`b = 0..K-1` with :math:`K = \min(|V|, |D|)`.

Variables (all Boolean unless noted):

* :math:`z_{vb}` = layer v sits in stage :math:`\le b` (cumulative; :math:`z_{v,K-1} = 1`), so
  :math:`x_{vb} = z_{vb} - z_{v,b-1}` says v is in stage b. Cumulative variables make precedence a
  plain :math:`z_{wb} \le z_{ub}` for each edge (u, w), which keeps the LP relaxation tight.
* :math:`y_{bd}` = stage b runs on device d; :math:`u_b = \sum_d y_{bd}` says stage b is used.
* :math:`X_{vd}` = layer v runs on device d. It makes compute linear per device:
  :math:`C_d = \sum_v t(v, d) X_{vd}`, with no big-M, which is where the bound comes from.
* relay: :math:`a_{ub}` = tensor of u is alive across boundary b; :math:`R_b \ge 0` (time) the
  boundary's link time; :math:`\ell_{b,\lambda}` = boundary b uses a link of type
  :math:`\lambda` (a distinct (latency, bandwidth) pair), only when links differ.
* direct: :math:`r_{ue}` = device e receives u's tensor; :math:`\rho_{ue}, \varsigma_{ud} \ge 0`
  (time) what receiving and sending it costs.
* :math:`P` (period) and :math:`L` (latency), time.

Constraints, each with its reason:

1. Stage slots: :math:`\sum_d y_{bd} \le 1`, :math:`\sum_b y_{bd} \le 1` (distinct devices),
   :math:`u_0 = 1`, :math:`u_b \ge u_{b+1}` (used slots form a prefix: removes empty-slot symmetry).
2. :math:`z_{vb} \le z_{v,b+1}`; :math:`z_{wb} \le z_{ub}` on each edge (no backward edge);
   :math:`z_{vb} \ge 1 - u_{b+1}` (layers only in used stages); :math:`\sum_v x_{vb} \ge u_b`
   (no empty stage).
3. :math:`\sum_d X_{vd} = 1` (only allowed devices), and the two implications
   :math:`X_{vd} \ge x_{vb} + y_{bd} - 1`, :math:`x_{vb} \ge X_{vd} + y_{bd} - 1`.
4. Colocation: equal :math:`X` and :math:`z` across each group.
5. Relay: :math:`a_{ub} \ge z_{ub} - z_{wb}` for each consumer w (the sink counts as a consumer in
   the slot after the last used stage: :math:`a_{ub} \ge z_{ub} + u_{b+1} - 1`; the input as a
   tensor produced before stage 0); :math:`B_b = \sum_u \beta_u a_{ub}`;
   :math:`R_b \ge \lambda_{de} + B_b / bw_{de}` when :math:`y_{bd} \wedge y_{b+1,e}` (grouped by
   link type). Source and sink link times are linear in :math:`y` since their bytes are fixed.
6. Direct: :math:`r_{ue} \ge X_{we} - X_{ue}`; the receiver pays
   :math:`\rho_{ue} \ge \tau_{de}(\beta_u)(X_{ud} + r_{ue} - 1)` and the sender
   :math:`\varsigma_{ud} \ge \tau_{de}(\beta_u)(X_{ud} + r_{ue} - 1)` for every :math:`e \ne d`
   (that is, the slowest destination, once per tensor).
7. Period: overlap: :math:`P \ge C_d`, :math:`P \ge` every receive and send time; without
   overlap :math:`P \ge \mathrm{in}_b + C_b + \mathrm{out}_b` per stage (compute per stage from
   :math:`C_d` enforced by :math:`y_{bd}`). Source and sink are stages of their own.
8. Memory (only for devices that could overflow): parameters + :math:`W_d \ge w_v X_{vd}` +
   receive and send buffers :math:`\le` memory, enforced by :math:`y_{bd}` in relay.
9. Lower bound :math:`P \ge` :func:`edgepart.bounds.quick_bound` (the work bounds), and an upper
   bound from a warm-start plan when given. On relay transfers the formulation also computes
   ``floor``, :func:`edgepart.cuts.first_stages_bound` (source transfer, compute and boundaries
   of the first two stages over every pair of ideals they may be), which the driver uses as a
   bound outside the model.
10. Symmetry breaking: devices that are interchangeable (same class, memory, speed, links in both
    directions to every other device, not the source or sink) are used in index order and appear
    in the pipeline in index order.

The model is exactly :mod:`edgepart.cost` for every cost-model option; the decoded plan is
re-evaluated there all the same.

Warm start (:meth:`PipelineFormulation.hint`): a value for every variable, Booleans and numbers,
so that no solver has to complete it; interchangeable devices are relabelled into the order of
the symmetry rows (10.) first, at no cost. At the cap ``upper_bound`` = the plan's own objective
the hint satisfies every row (``tests/test_hints.py`` checks it against each row, in real
arithmetic and in the integer model of :mod:`edgepart.formulations.model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

from edgepart.bounds import quick_bound
from edgepart.cost import tolerated
from edgepart.cuts import first_stages_bound
from edgepart.formulations.model import NO_DEADLINE, Deadline, Dim, LinearModel, Rounding, Terms
from edgepart.instance import Instance, Link, Transfer
from edgepart.plan import Plan

__all__ = ["PipelineFormulation"]


@dataclass
class PipelineFormulation:
    """Builds the model of :mod:`this module <edgepart.formulations.pipeline>` once; decodes."""

    inst: Instance
    objective: str = "bottleneck"
    max_latency: float | None = None
    max_period: float | None = None
    upper_bound: float | None = None
    deadline: Deadline = NO_DEADLINE
    """Building raises :class:`~edgepart.formulations.model.OutOfTime` past it."""
    model: LinearModel = field(default_factory=LinearModel)
    floor: float = field(default=-math.inf, init=False)
    """A lower bound on the objective known before any solve (:meth:`_period_floor` for the
    period; none for the latency). Not a row of the model: as a row (``P >= floor``) it made
    HiGHS's root cut loop overrun its time limit (nasnet 218 x 8: 93 s and 106 s for 60 s, twice;
    59-60 s without it), so the driver uses it outside: as the bound when a solver's is weaker, and
    as the proof when the warm start meets it."""
    lower_rows: dict[int, list[int]] = field(default_factory=dict, init=False)
    """Per variable defined by rows of the form ``var >= expression`` (every number, and the
    Booleans ``a``, ``link``, ``r``, ``sent`` that follow from the plan's), those rows' indices
    (:meth:`_at_least`); :meth:`hint` sets each to the largest value they give."""
    symmetric: list[tuple[int, int]] = field(default_factory=list, init=False)
    """The interchangeable device pairs of the symmetry rows (10.)."""

    def __post_init__(self) -> None:
        inst = self.inst
        self.n, self.nd = len(inst.model.layers), len(inst.devices)
        self.K = min(self.n, self.nd)
        self.horizon = self._horizon()
        self._build()

    # -- sizes and bounds --------------------------------------------------------------------

    def _horizon(self) -> float:
        r"""An upper bound on every time quantity of every plan, for this objective.

        Let :math:`m = (\beta_{in} + \sum_u \beta_u) / bw_{min} + (n + 2) \lambda_{max}`
        (slowest link, largest latency): at least the time of all tensors sent over one link, one
        message each.

        * Period: a stage computes on one device, :math:`C_b \le \max_d \sum_v t(v, d)`
          (finite times only), and receives and sends at most every tensor once each way
          (relay: one message per boundary; direct: one per tensor), so
          :math:`T_b \le \max_d \sum_v t(v, d) + 2 m`.
        * Latency adds compute over *different* devices and pays transfers at every boundary,
          so the period's bound does not hold for it (a latency optimum above it was seen:
          ``tests/cases``). :math:`\sum_b C_b \le \sum_v \max_d t(v, d)`, and the
          transfers are at most :math:`K + 1` boundary messages (relay) or, per tensor, one
          message to each of at most :math:`K + 1` stages (direct), so
          :math:`L \le \sum_v \max_d t(v, d) + (K + 1) m`. Every time variable is at most the
          latency (each stage's receive, compute and send time is part of it, and a sender pays
          the slowest of receptions that the latency counts), so this bounds them all.
        """
        inst = self.inst
        finite = [[t for t in row if math.isfinite(t)] for row in inst.times]
        links = [inst.links[i][j] for i in range(self.nd) for j in range(self.nd) if i != j]
        one_way = 0.0
        if links:
            total = sum(inst.model.tensor_bytes) + inst.model.input_bytes
            slow_bw = min(x.bandwidth_bytes_per_s for x in links)
            slow_lat = max(x.latency_s for x in links)
            one_way = total / slow_bw + (self.n + 2) * slow_lat
        if self.objective == "latency":
            return sum(max(row) for row in finite) + (self.K + 1) * one_way + 1e-9
        compute = max(sum(t for t in row if math.isfinite(t))
                      for row in zip(*inst.times, strict=True))
        return compute + 2 * one_way + 1e-9

    # -- variables ---------------------------------------------------------------------------

    def _build(self) -> None:
        m, n, nd, K = self.model, self.n, self.nd, self.K
        self.z = [[m.boolean(f"z[{v},{b}]") for b in range(K - 1)] for v in range(n)]
        self.y = [[m.boolean(f"y[{b},{d}]") for d in range(nd)] for b in range(K)]
        self.X = [{d: m.boolean(f"X[{v},{d}]") for d in range(nd) if self.inst.allowed(v, d)}
                  for v in range(n)]
        # Every time quantity is at most the objective of an optimal plan (each stage's receive,
        # compute and send time is bounded by the period, and by the latency), so an incumbent's
        # objective caps them all; this also keeps CP-SAT's integer time unit fine.
        self.cap = self.horizon if self.upper_bound is None else min(
            self.horizon, self.upper_bound * (1 + 1e-7) + 1e-12)
        self.P = m.number("P", self.cap, Dim.TIME)
        wants_latency = self.objective == "latency" or self.max_latency is not None
        latency_ub = (self.cap if self.objective == "latency"
                      else tolerated(self.max_latency or 0.0))
        self.L = m.number("L", latency_ub, Dim.TIME) if wants_latency else -1
        self._stage_slots()
        self._layers_in_stages()
        self._colocation()
        stage_in, stage_out, extra_stages = (
            self._relay() if self.inst.cost_model.transfer is Transfer.RELAY else self._direct())
        self._period(stage_in, stage_out, extra_stages)
        self._memory()
        self._symmetry()
        self._objective()

    def _at_least(self, var: int, terms: Terms, const: float = 0.0, *,
                  enforce: tuple[int, ...] = (), dim: Dim = Dim.TIME) -> None:
        """Add ``var + terms + const >= 0`` (when every ``enforce`` literal is 1): a lower bound
        on ``var`` by variables other than it. Times and bytes may be relaxed by rounding; counts
        (Booleans) have integer coefficients."""
        self.lower_rows.setdefault(var, []).append(len(self.model.constraints))
        self.model.ge([(1.0, var), *terms], const, dim=dim, enforce=enforce,
                      rounding=Rounding.EXACT if dim is Dim.COUNT else Rounding.RELAX)

    def zt(self, v: int, b: int) -> tuple[Terms, float]:
        """:math:`z_{vb}` as (terms, constant): stage of v <= b."""
        if b < 0:
            return [], 0.0
        if b >= self.K - 1:
            return [], 1.0
        return [(1.0, self.z[v][b])], 0.0

    def xt(self, v: int, b: int) -> tuple[Terms, float]:
        """:math:`x_{vb} = z_{vb} - z_{v,b-1}`."""
        t1, c1 = self.zt(v, b)
        t0, c0 = self.zt(v, b - 1)
        return t1 + [(-c, i) for c, i in t0], c1 - c0

    def used(self, b: int) -> Terms:
        return [] if b >= self.K else [(1.0, self.y[b][d]) for d in range(self.nd)]

    def compute(self, d: int) -> Terms:
        return [(self.inst.times[v][d], X[d]) for v, X in enumerate(self.X) if d in X]

    # -- constraints -------------------------------------------------------------------------

    def _stage_slots(self) -> None:
        m = self.model
        for b in range(self.K):
            m.le(self.used(b), -1.0)
        for d in range(self.nd):
            m.le([(1.0, self.y[b][d]) for b in range(self.K)], -1.0)
        m.eq(self.used(0), -1.0)  # stage 0 is used
        for b in range(self.K - 1):
            m.ge(self.used(b) + _neg(self.used(b + 1)))

    def _layers_in_stages(self) -> None:
        m, g = self.model, self.inst.model
        for v in range(self.n):
            self.deadline.check()
            for b in range(self.K - 2):
                m.ge([(1.0, self.z[v][b + 1]), (-1.0, self.z[v][b])])
            for b in range(self.K - 1):
                m.ge([(1.0, self.z[v][b]), *self.used(b + 1)], -1.0)  # z_vb >= 1 - u_{b+1}
            m.eq([(1.0, X) for X in self.X[v].values()], -1.0)
            for b in range(self.K):
                xt, xc = self.xt(v, b)
                for d, X in self.X[v].items():
                    y = self.y[b][d]
                    m.ge([(1.0, X), *_neg(xt), (-1.0, y)], 1.0 - xc)  # X >= x + y - 1
                    m.ge([*xt, (-1.0, X), (-1.0, y)], xc + 1.0)  # x >= X + y - 1
                for d in range(self.nd):
                    if d not in self.X[v]:
                        m.ge([*_neg(xt), (-1.0, self.y[b][d])], 1.0 - xc)  # not both
        for u, succ in enumerate(g.succ):
            for w in succ:
                for b in range(self.K - 1):
                    m.ge([(1.0, self.z[u][b]), (-1.0, self.z[w][b])])
        for b in range(self.K):
            terms: Terms = []
            const = 0.0
            for v in range(self.n):
                xt, xc = self.xt(v, b)
                terms += xt
                const += xc
            m.ge(terms + _neg(self.used(b)), const, name=f"stage {b} not empty")

    def _colocation(self) -> None:
        m, g = self.model, self.inst.model
        for group in g.colocate:
            ids = [g.index[lid] for lid in group]
            for v, w in pairwise(ids):
                for b in range(self.K - 1):
                    m.eq([(1.0, self.z[v][b]), (-1.0, self.z[w][b])])
                for d in set(self.X[v]) | set(self.X[w]):
                    m.eq(([(1.0, self.X[v][d])] if d in self.X[v] else [])
                         + ([(-1.0, self.X[w][d])] if d in self.X[w] else []))

    # relay ---------------------------------------------------------------------------------

    def _relay(self) -> tuple[list[Terms], list[Terms], list[Terms]]:
        """Relay transfers; returns per-stage receive and send time expressions, plus the
        expressions of the source's and sink's own stages."""
        m, inst, g, K = self.model, self.inst, self.inst.model, self.K
        alive = self._alive()
        types = _link_types(inst)
        bytes_at = [[(g.input_bytes if u == -1 else g.tensor_bytes[u], a[b]) for u, a in alive]
                    for b in range(K - 1)]
        self.bytes_at = bytes_at
        R: list[Terms] = []
        for b in range(K - 1):
            r = m.number(f"R[{b}]", self.cap, Dim.TIME)
            R.append([(1.0, r)])
            for link, pairs in types.items():
                time_terms = [(-nb / link.bandwidth_bytes_per_s, a) for nb, a in bytes_at[b]]
                if len(types) == 1:
                    self._at_least(r, [*time_terms, *_scale(self.used(b + 1), -link.latency_s)])
                    continue
                lt = m.boolean(f"link[{b},{link}]")
                for d, e in pairs:
                    self._at_least(lt, [(-1.0, self.y[b][d]), (-1.0, self.y[b + 1][e])], 1.0,
                                   dim=Dim.COUNT)
                self._at_least(r, time_terms, -link.latency_s, enforce=(lt,))
        src = self._source_time()
        sink = [self._sink_time(b) for b in range(K)]
        self.sink_all = [t for terms in sink for t in terms]
        stage_in = [src, *R]
        stage_out = [(R[b] if b < K - 1 else []) + sink[b] for b in range(K)]
        return stage_in, stage_out, []

    def _alive(self) -> list[tuple[int, list[int]]]:
        """(producer, a[b] per boundary) for every tensor; producer -1 is the request input."""
        m, inst, g, K = self.model, self.inst, self.inst.model, self.K
        out = []
        for u, succ in enumerate(g.succ):
            self.deadline.check()
            to_sink = not succ and inst.sink is not None
            if not succ and not to_sink:
                continue
            a = [m.boolean(f"a[{u},{b}]") for b in range(K - 1)]
            for b in range(K - 1):
                for w in succ:
                    self._at_least(a[b], [(-1.0, self.z[u][b]), (1.0, self.z[w][b])],
                                   dim=Dim.COUNT)
                if to_sink:
                    self._at_least(a[b], [(-1.0, self.z[u][b]), *_neg(self.used(b + 1))], 1.0,
                                   dim=Dim.COUNT)
            out.append((u, a))
        if inst.source is not None:
            a = [m.boolean(f"a[input,{b}]") for b in range(K - 1)]
            for b in range(K - 1):
                for e in g.entries:
                    self._at_least(a[b], [(1.0, self.z[e][b])], -1.0, dim=Dim.COUNT)
            out.append((-1, a))
        return out

    def _source_time(self) -> Terms:
        s = self.inst.source_index
        if s is None:
            return []
        nbytes = self.inst.model.input_bytes
        return [(self.inst.transfer_time(s, d, nbytes), self.y[0][d]) for d in range(self.nd)
                if d != s]

    def _sink_time(self, b: int) -> Terms:
        """Time for stage b to send the model outputs to the sink if it is the last stage."""
        k = self.inst.sink_index
        if k is None:
            return []
        nbytes = sum(self.inst.model.tensor_bytes[u] for u in self.inst.model.exits)
        t = self.model.number(f"sink[{b}]", self.cap, Dim.TIME)
        for d in range(self.nd):
            if d != k:
                tau = self.inst.transfer_time(d, k, nbytes)
                self._at_least(t, [(-tau, self.y[b][d]), *_scale(self.used(b + 1), tau)])
        return [(1.0, t)]

    # direct --------------------------------------------------------------------------------

    def _direct(self) -> tuple[list[Terms], list[Terms], list[Terms]]:
        """Direct transfers, indexed by device; returns per-device receive and send times (the
        period and latency use them per device) and the source's and sink's own stages."""
        m, inst, g, nd = self.model, self.inst, self.inst.model, self.nd
        recv: list[Terms] = [[] for _ in range(nd)]
        send: list[Terms] = [[] for _ in range(nd)]
        self.recv_flags: list[list[tuple[float, int]]] = [[] for _ in range(nd)]
        self.send_flags: list[list[tuple[float, int]]] = [[] for _ in range(nd)]
        for u, succ in enumerate(g.succ):
            self.deadline.check()
            if succ:
                self._direct_tensor(u, succ, recv, send)
        sink_stage: Terms = []
        k = inst.sink_index
        if k is not None:
            for u in g.exits:
                for d, X in self.X[u].items():
                    if d != k:
                        tau = inst.transfer_time(d, k, g.tensor_bytes[u])
                        sink_stage.append((tau, X))
                        st = m.number(f"send_sink[{u},{d}]", self.cap, Dim.TIME)
                        self._at_least(st, [(-tau, X)])
                        send[d].append((1.0, st))
                        self.send_flags[d].append((g.tensor_bytes[u], X))
        source_stages = self._direct_input(recv)
        self.sink_all = sink_stage
        return recv, send, [sink_stage, *source_stages]

    def _direct_tensor(self, u: int, succ: tuple[int, ...], recv: list[Terms],
                       send: list[Terms]) -> None:
        m, inst, nbytes = self.model, self.inst, self.inst.model.tensor_bytes[u]
        r = {}
        for e in range(self.nd):
            consumers = [w for w in succ if e in self.X[w]]
            if not consumers:
                continue
            r[e] = m.boolean(f"r[{u},{e}]")
            for w in consumers:
                self._at_least(r[e], [(-1.0, self.X[w][e]),
                                      *([(1.0, self.X[u][e])] if e in self.X[u] else [])],
                               dim=Dim.COUNT)
            self.recv_flags[e].append((nbytes, r[e]))
        for d, X in self.X[u].items():
            dests = [e for e in r if e != d]
            if not dests:
                continue
            st = m.number(f"send[{u},{d}]", self.cap, Dim.TIME)
            sent = m.boolean(f"sent[{u},{d}]")
            send[d].append((1.0, st))
            self.send_flags[d].append((nbytes, sent))
            for e in dests:
                tau = inst.transfer_time(d, e, nbytes)
                self._at_least(st, [(-tau, X), (-tau, r[e])], tau)
                self._at_least(sent, [(-1.0, X), (-1.0, r[e])], 1.0, dim=Dim.COUNT)
        for e, re in r.items():
            senders = [d for d in self.X[u] if d != e]
            rt = m.number(f"recv[{u},{e}]", self.cap, Dim.TIME)
            recv[e].append((1.0, rt))
            for d in senders:
                tau = inst.transfer_time(d, e, nbytes)
                self._at_least(rt, [(-tau, self.X[u][d]), (-tau, re)], tau)

    def _direct_input(self, recv: list[Terms]) -> list[Terms]:
        """The input tensor from the source to each device holding an entry layer."""
        m, inst, g = self.model, self.inst, self.inst.model
        s = inst.source_index
        if s is None:
            return []
        stages = []
        for e in range(self.nd):
            entries = [v for v in g.entries if e in self.X[v]]
            if e == s or not entries:
                continue
            r = m.boolean(f"r[input,{e}]")
            for v in entries:
                self._at_least(r, [(-1.0, self.X[v][e])], dim=Dim.COUNT)
            tau = inst.transfer_time(s, e, g.input_bytes)
            recv[e].append((tau, r))
            self.recv_flags[e].append((g.input_bytes, r))
            stages.append([(tau, r)])
        return stages

    # period, memory, latency ---------------------------------------------------------------

    def _period(self, stage_in: list[Terms], stage_out: list[Terms], extra: list[Terms]) -> None:
        """P >= every stage's time; L >= the latency expression."""
        m, relay = self.model, self.inst.cost_model.transfer is Transfer.RELAY
        for terms in extra:
            self._at_least(self.P, _neg(terms))
        if self.inst.cost_model.overlap:
            for d in range(self.nd):
                self._at_least(self.P, _neg(self.compute(d)))
            for terms in stage_in + stage_out:
                if terms:
                    self._at_least(self.P, _neg(terms))
        elif relay:
            for b in range(self.K):
                cs = m.number(f"C[{b}]", self.cap, Dim.TIME)
                for d in range(self.nd):
                    self._at_least(cs, _neg(self.compute(d)), enforce=(self.y[b][d],))
                self._at_least(self.P, _neg(stage_in[b] + [(1.0, cs)] + stage_out[b]))
        else:
            for d in range(self.nd):
                self._at_least(self.P, _neg(stage_in[d] + self.compute(d) + stage_out[d]))
        latency = [t for d in range(self.nd) for t in self.compute(d)]
        latency += [t for terms in stage_in for t in terms] + self.sink_all
        if self.L >= 0:
            self._at_least(self.L, _neg(latency))

    def _memory(self) -> None:
        """Memory per device, only where it could overflow."""
        m, inst, g = self.model, self.inst, self.inst.model
        for d, dev in enumerate(inst.devices):
            self.deadline.check()
            layers = [v for v in range(self.n) if d in self.X[v]]
            params = [(g.layers[v].param_bytes, self.X[v][d]) for v in layers]
            worst = (sum(c for c, _ in params) + max((g.layers[v].work_bytes for v in layers),
                                                     default=0.0)
                     + 2 * (sum(g.tensor_bytes) + g.input_bytes))
            if worst <= dev.memory_bytes:
                continue
            work = m.number(f"W[{d}]", max((g.layers[v].work_bytes for v in layers), default=0),
                            Dim.BYTES)
            for v in layers:
                if g.layers[v].work_bytes:
                    self._at_least(work, [(-g.layers[v].work_bytes, self.X[v][d])],
                                   dim=Dim.BYTES)
            own = [*params, (1.0, work)]
            if inst.cost_model.transfer is Transfer.RELAY:
                for b in range(self.K):
                    m.capacity_le(own + self._relay_buffers(b, d), -dev.memory_bytes, Dim.BYTES,
                                  enforce=(self.y[b][d],))
            else:
                m.capacity_le(own + self.recv_flags[d] + self.send_flags[d], -dev.memory_bytes,
                              Dim.BYTES)

    def _relay_buffers(self, b: int, d: int) -> Terms:
        inst, g = self.inst, self.inst.model
        terms: Terms = []
        if b > 0:
            terms += self.bytes_at[b - 1]
        if b < self.K - 1:
            terms += self.bytes_at[b]
        if b == 0 and inst.source_index not in (None, d):
            terms.append((g.input_bytes, self.y[0][d]))
        if inst.sink_index not in (None, d):
            out = sum(g.tensor_bytes[u] for u in g.exits)
            terms += [(out, self.y[b][d]), *_scale(self.used(b + 1), -out)]
        return terms

    def _symmetry(self) -> None:
        """Interchangeable devices are used, and ordered in the pipeline, by index."""
        m, K = self.model, self.K
        self.symmetric = _interchangeable(self.inst)
        for d1, d2 in self.symmetric:
            used1 = [(1.0, self.y[b][d1]) for b in range(K)]
            used2 = [(1.0, self.y[b][d2]) for b in range(K)]
            m.ge(used1 + _neg(used2))
            pos1 = [(float(b), self.y[b][d1]) for b in range(K)]
            pos2 = [(float(b), self.y[b][d2]) for b in range(K)]
            m.ge(pos2 + _neg(pos1) + _scale(used2, -K), K)

    def _objective(self) -> None:
        m = self.model
        if self.objective == "latency":
            m.objective = self.L
            if self.max_period is not None:
                m.capacity_le([(1.0, self.P)], -tolerated(self.max_period), Dim.TIME)
        else:
            m.objective = self.P
            work = quick_bound(self.inst)
            self._at_least(self.P, [], -work)
            self.floor = self._period_floor(work)
            if self.max_latency is not None:
                m.capacity_le([(1.0, self.L)], -tolerated(self.max_latency), Dim.TIME)

    def _period_floor(self, work: float) -> float:
        """A lower bound on every plan's period (capped at ``cap``): ``work``
        (:func:`edgepart.bounds.quick_bound`), and on relay
        transfers also :func:`edgepart.cuts.first_stages_bound` (the first two stages' source
        transfer, compute and boundaries), which the LP relaxation cannot see: it spreads every
        layer over all slots, so that no boundary carries a tensor (15.7 ms against 33.9 ms on
        Inception-v3)."""
        floor = work
        if self.inst.cost_model.transfer is Transfer.RELAY:
            floor = max(floor, first_stages_bound(self.inst, self.cap, self.deadline))
        return floor

    # decoding and hints --------------------------------------------------------------------

    def decode(self, values: list[float]) -> Plan:
        """Solver values -> plan (stage of each layer from z, device of each stage from y)."""
        stage_of = []
        for v in range(self.n):
            b = next((b for b in range(self.K - 1) if values[self.z[v][b]] > 0.5), self.K - 1)
            stage_of.append(b)
        devices = [d for b in range(self.K) for d in range(self.nd) if values[self.y[b][d]] > 0.5]
        return Plan.from_assignment(self.inst, stage_of, devices)

    def hint(self, plan: Plan) -> dict[int, float]:
        """A value for every variable of the model from ``plan`` (a complete warm start, so that
        no solver has to complete it); empty when the plan does not fit the slots (a layer or
        device it does not know, more stages than slots).

        Interchangeable devices are relabelled first (:meth:`canonical_devices`): the symmetry
        rows (10.) admit them only from the lowest index up and in index order along the
        pipeline, and a heuristic's plan need not be so (the local search's plan on a 994-layer
        NASNet over 32 devices ran d2 before d1, d16 before d15 and d25 before d24, and HiGHS
        found the completion of its Booleans infeasible in presolve). The relabelled plan costs
        the same: swapping two interchangeable devices maps every plan to one of equal cost.

        ``z``, ``y`` and ``X`` are the plan's; every variable defined by rows of the form
        ``var >= expression`` (:attr:`lower_rows`) then takes the largest value its rows give,
        Booleans first (``a``, ``link``, ``r``, ``sent`` follow from ``z``, ``y``, ``X``, and
        ``sent`` from ``r``, which is built before it), then the numbers that only Booleans bound
        (link, send, receive and stage times, working sets), then ``P`` and ``L``. These are the
        least values the model allows, which are the cost model's (the period and latency of
        :func:`edgepart.cost.evaluate`, up to the order of floating-point sums).
        """
        sigma = plan.stage_of(self.inst)
        devs = plan.devices(self.inst)
        if -1 in sigma or -1 in devs or len(devs) > self.K:
            return {}
        devs = self.canonical_devices(devs)
        values = dict.fromkeys(range(len(self.model.vars)), 0.0)
        for v in range(self.n):
            for b in range(self.K - 1):
                values[self.z[v][b]] = float(sigma[v] <= b)
            for d, X in self.X[v].items():
                values[X] = float(devs[sigma[v]] == d)
        for b, d in enumerate(devs):
            values[self.y[b][d]] = 1.0
        for var in sorted(self.lower_rows, key=lambda i: (
                not self.model.vars[i].boolean, i in (self.P, self.L), i)):
            values[var] = self._least(var, values)
        return values

    def _least(self, var: int, values: dict[int, float]) -> float:
        """The least value of ``var`` (at least 0) that its rows allow, given the others'."""
        least = 0.0
        for k in self.lower_rows[var]:
            con = self.model.constraints[k]
            if all(values[lit] > 0.5 for lit in con.enforce):
                least = max(least, -sum(c * values[i] for c, i in con.terms[1:]) - con.const)
        return least

    def canonical_devices(self, devs: list[int]) -> list[int]:
        """``devs`` (the device of each stage) with interchangeable devices relabelled so that
        each set of them is used from its lowest index up, in index order along the pipeline:
        the form the symmetry rows (10.) admit."""
        rep = list(range(self.nd))
        for d1, d2 in self.symmetric:  # pairs run up each set in index order
            rep[d2] = rep[d1]
        members: dict[int, list[int]] = {}
        for d in range(self.nd):
            members.setdefault(rep[d], []).append(d)
        unused = {r: iter(ds) for r, ds in members.items()}
        return [next(unused[rep[d]]) for d in devs]


def _neg(terms: Terms) -> Terms:
    return [(-c, v) for c, v in terms]


def _scale(terms: Terms, k: float) -> Terms:
    return [(c * k, v) for c, v in terms]


def _link_types(inst: Instance) -> dict[Link, list[tuple[int, int]]]:
    types: dict[Link, list[tuple[int, int]]] = {}
    for i in range(len(inst.devices)):
        for j in range(len(inst.devices)):
            if i != j:
                types.setdefault(inst.links[i][j], []).append((i, j))
    return types


def _interchangeable(inst: Instance) -> list[tuple[int, int]]:
    """Consecutive pairs (d1 < d2) of devices that can be swapped in any plan at no cost."""
    nd = len(inst.devices)
    fixed = {inst.source_index, inst.sink_index}

    def signature(d: int) -> tuple[object, ...]:
        dev = inst.devices[d]
        return (dev.cls, dev.memory_bytes, dev.flops_per_s, tuple(row[d] for row in inst.times))

    groups: dict[tuple[object, ...], list[int]] = {}
    for d in range(nd):
        if d not in fixed:
            groups.setdefault(signature(d), []).append(d)
    pairs = []
    for members in groups.values():
        for d1, d2 in pairwise(members):
            if all(inst.links[d1][e] == inst.links[d2][e] and inst.links[e][d1] == inst.links[e][d2]
                   for e in range(nd) if e not in (d1, d2)) and (
                    inst.links[d1][d2] == inst.links[d2][d1]):
                pairs.append((d1, d2))
    return pairs
