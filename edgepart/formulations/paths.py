r"""The path formulation: a plan as one path through cuts and device types.

Applies to relay transfers (and to every chain, where relay and direct transfers coincide). A
plan is a chain of cuts :math:`\emptyset = I_0 \subsetneq \dots \subsetneq I_k = V` of
:mod:`edgepart.cuts` with stage :math:`b` running :math:`I_{b+1} \setminus I_b` on a device of
type :math:`t_b` (devices of a type are interchangeable). A stage's compute and memory depend
only on :math:`(J, I, t)`; the message across cut :math:`I` only on :math:`(I, u, v)`, the types
on its two sides. So a plan is a path, and the model has one variable per possible piece of it.

Variables:

* :math:`s_{JIt} \in \{0, 1\}`, a *stage arc*: stage :math:`I \setminus J` runs on type
  :math:`t`; only where every layer may run on :math:`t` and the stage fits in its memory with
  its buffers. Its time is :math:`c_{JIt}` (compute), :math:`e_{Jt}` (the source's transfer
  when :math:`J = \emptyset`) and :math:`f_{It}` (the sink's when :math:`I = V`).
* :math:`h_{Iuv} \in [0, 1]`, a *link arc*: the stage ending at inner cut :math:`I` is of type
  :math:`u` and the next of type :math:`v`; time :math:`\tau_{Iuv}` = latency + bytes /
  bandwidth. Integral whenever :math:`s` is (one stage ends and one starts at a used cut).

Constraints:

1. One path: :math:`\sum_{I,t} s_{\emptyset It} = \sum_{J,t} s_{JVt} = 1`; at each inner cut
   :math:`I` and type :math:`t`, :math:`\sum_J s_{JIt} = \sum_v h_{Itv}` (a stage of type t that
   ends at I hands over) and :math:`\sum_u h_{Iut} = \sum_K s_{IKt}` (and one starts).
2. Types: :math:`\sum_{J,I} s_{JIt} \le n_t`, each device used once. Interchangeable devices
   are one type, so their symmetry is gone from the model altogether.
3. Period at most a threshold :math:`\theta`. With overlap every arc whose time exceeds
   :math:`\theta` is left out (a stage arc's time is :math:`\max(c, e, f)`). Without overlap a
   stage costs :math:`\mathrm{in} + c + \mathrm{out}`:
   :math:`s_{JIt} \Rightarrow \sum_u \tau_{Jut} h_{Jut} + c_{JIt} + e_{Jt} + f_{It} +
   \sum_v \tau_{Itv} h_{Itv} \le \theta`, and stage arcs that cannot meet :math:`\theta` even
   with the fastest neighbours are left out.
4. Latency :math:`L \ge \sum (c + e + f) s + \sum \tau h`, minimised (latency objective) or
   capped (``max_latency``).

Arcs no path from the first cut to the last can use are removed, and so are arcs that cannot be
part of a plan better than the warm start (``upper_bound``).

Why it is exact and why it is strong: every plan is one path and every path is one plan, with the
same costs as :mod:`edgepart.cost` (the same numbers as the ideal DP). The period of a plan is one
of finitely many values (:attr:`PathFormulation.period_values`), so the driver
(:mod:`edgepart.solvers.exact`) asks whether a plan of period :math:`\le \theta` exists for
:math:`\theta` just below the incumbent, bisecting further only if one does; an infeasible answer
proves that every plan's period is at least the next value. With the arcs above :math:`\theta`
gone, the linear relaxation can no longer spread layers thinly over every device, which is why
the stage-slot model (:mod:`edgepart.formulations.pipeline`) leaves MILP solvers at the trivial
work/speed bound and this one does not. Its size is what limits it: pairs of ideals times types
(:data:`MAX_ARCS`), and only graphs with at most :data:`~edgepart.cuts.MAX_IDEALS` ideals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from edgepart.cost import tolerated
from edgepart.cuts import MAX_IDEALS, CutCosts, DeviceTypes, ideal_family, path_plan
from edgepart.formulations.model import NO_DEADLINE, Deadline, Dim, LinearModel, Terms
from edgepart.instance import Instance, Transfer
from edgepart.plan import Plan

__all__ = ["MAX_ARCS", "MAX_PERIOD_VALUES", "Inapplicable", "PathFormulation", "PathModel"]

MAX_ARCS = 1_500_000
"""Most stage arcs the formulation keeps (after pruning at the warm start)."""
MAX_PERIOD_VALUES = 30_000_000
"""Most (stage arc, incoming link, outgoing link) sums listed as candidate periods without
overlap."""


class Inapplicable(Exception):
    """The path formulation does not apply to the instance (the message says why)."""


@dataclass(frozen=True)
class PathModel:
    """One :class:`LinearModel` of the formulation (for one threshold) and its arc variables."""

    model: LinearModel
    arcs: np.ndarray  # stage arc index of each stage variable
    stage_vars: list[int]
    link_vars: list[int]
    links: np.ndarray  # link arc index of each link variable


@dataclass
class PathFormulation:
    """Arcs and their costs, built once; :meth:`model` writes the model for a threshold."""

    inst: Instance
    objective: str = "bottleneck"
    max_latency: float | None = None
    upper_bound: float | None = None
    deadline: Deadline = NO_DEADLINE
    """Building raises :class:`~edgepart.formulations.model.OutOfTime` past it."""
    costs: CutCosts = field(init=False)

    def __post_init__(self) -> None:
        """Raises :class:`Inapplicable` for direct transfers on a DAG, too many ideals or more
        than :data:`MAX_ARCS` stage arcs."""
        if self.inst.cost_model.transfer is not Transfer.RELAY and not self.inst.model.is_chain:
            raise Inapplicable("direct transfers on a DAG cost a tensor by the devices of "
                               "non-adjacent stages, which a path through cuts does not see")
        family = ideal_family(self.inst)
        if family is None:
            raise Inapplicable(f"the layer graph has more than {MAX_IDEALS} ideals")
        types = DeviceTypes.of(self.inst, range(len(self.inst.devices)))
        self.costs = CutCosts.of(self.inst, family, types)
        self.overlap = self.inst.cost_model.overlap
        self.last = family.size - 1
        rest = self._rest()
        self._stage_arcs(rest)
        self._link_arcs(rest)

    # -- arcs ---------------------------------------------------------------------------------

    @property
    def cap(self) -> float:
        return math.inf if self.upper_bound is None else self.upper_bound * (1 + 1e-7)

    def _rest(self) -> np.ndarray:
        """Per cut, the least compute any plan spends on its layers (each on its fastest type)."""
        times = np.array(self.inst.times, dtype=float)
        fastest = np.where(np.isfinite(times), times, np.inf).min(axis=1)
        return self.costs.family.sets.astype(float) @ np.where(np.isfinite(fastest), fastest, 0)

    def _stage_arcs(self, rest: np.ndarray) -> None:
        c, fam = self.costs, self.costs.family
        rows: list[np.ndarray] = []
        kept = 0
        for i in range(1, fam.size):
            self.deadline.check()
            if kept > MAX_ARCS:  # stop at once: building the rest took 18 s on a 2,847-ideal DAG
                raise Inapplicable(f"more than {MAX_ARCS} stage arcs after pruning")
            js = fam.subs[i]
            comp = c.stage(i, js)
            entry = np.where((js == 0)[:, None], c.src[None, :], 0.0)
            exit_ = np.broadcast_to(c.snk if i == self.last else np.zeros_like(c.snk), comp.shape)
            ok = np.isfinite(comp) & (self._stage_floor(comp, entry, exit_, rest, i, js)
                                      <= self.cap)
            k, t = np.nonzero(ok)
            kept += len(k)
            rows.append(np.stack([js[k], np.full(len(k), i), t, comp[k, t], entry[k, t],
                                  exit_[k, t]], axis=1))
        arcs = np.concatenate(rows) if rows else np.zeros((0, 6))
        self.sj, self.si, self.st = (arcs[:, k].astype(np.int64) for k in range(3))
        self.comp, self.entry, self.exit = arcs[:, 3], arcs[:, 4], arcs[:, 5]

    def _stage_floor(self, comp: np.ndarray, entry: np.ndarray, exit_: np.ndarray,
                     rest: np.ndarray, i: int, js: np.ndarray) -> np.ndarray:
        """What any plan using the arc has at least as its objective."""
        if self.objective == "latency":
            return comp + entry + exit_ + (rest[js] + rest[self.last] - rest[i])[:, None]
        return np.maximum(np.maximum(comp, entry), exit_) if self.overlap else comp + entry + exit_

    def _link_arcs(self, rest: np.ndarray) -> None:
        c, rows = self.costs, []
        floor = rest[self.last] if self.objective == "latency" else 0.0
        for i in range(1, self.last):
            tau = c.cross(i)
            u, v = np.nonzero(np.isfinite(tau) & (tau + floor <= self.cap))
            rows.append(np.stack([np.full(len(u), i), u, v, tau[u, v]], axis=1))
        arcs = np.concatenate(rows) if rows else np.zeros((0, 4))
        self.li, self.lu, self.lv = (arcs[:, k].astype(np.int64) for k in range(3))
        self.tau = arcs[:, 3]

    @property
    def size(self) -> int:
        return len(self.sj)

    @cached_property
    def own_time(self) -> np.ndarray:
        """Per stage arc: compute plus the source's and the sink's transfers (its latency)."""
        return self.comp + self.entry + self.exit

    @cached_property
    def arc_period(self) -> np.ndarray:
        """Per stage arc with overlap: the largest of compute and the source's and sink's
        transfers."""
        return np.maximum(np.maximum(self.comp, self.entry), self.exit)

    # -- candidate periods --------------------------------------------------------------------

    @cached_property
    def period_values(self) -> np.ndarray | None:
        """Every value the period of a plan can take (sorted, at most the upper bound); ``None``
        when there are more than :data:`MAX_PERIOD_VALUES` (no overlap only)."""
        if self.overlap:
            values = np.concatenate([self.arc_period, self.tau])
            return np.unique(values[values <= self.cap])
        ins, outs = self.neighbour_times
        if len(self.sj) * ins.shape[1] * outs.shape[1] > MAX_PERIOD_VALUES:
            return None
        chunks = []
        base = self.own_time
        for lo in range(0, len(base), 100_000):
            part = slice(lo, lo + 100_000)
            sums = (base[part, None, None] + ins[part, :, None] + outs[part, None, :]).ravel()
            chunks.append(np.unique(sums[sums <= self.cap]))
        return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0)

    @cached_property
    def neighbour_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(stage arcs, T) times of the incoming and outgoing link of each stage arc by the type
        on the other side (``inf`` where none; one 0 at the first and the last cut)."""
        c = self.costs
        nt = c.types.n_types
        ins = np.full((self.size, nt), np.inf)
        outs = np.full((self.size, nt), np.inf)
        inner_in, inner_out = self.sj > 0, self.si < self.last
        ins[inner_in] = (c.lat[:, self.st[inner_in]]
                         + c.comm_bytes[self.sj[inner_in]] * c.inv_bw[:, self.st[inner_in]]).T
        outs[inner_out] = (c.lat[self.st[inner_out], :] + c.comm_bytes[self.si[inner_out]][:, None]
                           * c.inv_bw[self.st[inner_out], :])
        ins[~inner_in, 0] = 0.0
        outs[~inner_out, 0] = 0.0
        return ins, outs

    # -- the model ----------------------------------------------------------------------------

    def model(self, threshold: float | None, *, user_limit: bool = False) -> PathModel | None:
        """The model with every period at most ``threshold`` (``None``: no limit), or ``None``
        when no path survives. Rows are rounded toward feasible, so an infeasible answer proves
        that no plan meets the threshold. A ``user_limit`` (``--max-period``) is widened by the
        shared checker's tolerance (:func:`edgepart.cost.tolerated`): arc times are differences of
        cumulative sums, and a plan the checker accepts at the limit may sum a hair above it here
        (found by the property tests: "infeasible" at a limit equal to the optimum's period).
        A search threshold is a candidate value computed from these same arcs."""
        self.deadline.check()
        theta = math.inf if threshold is None else tolerated(threshold) if user_limit else threshold
        keep_s, keep_l = self._within(theta)
        keep_s, keep_l = self._on_some_path(keep_s, keep_l)
        if not keep_s.any():
            return None
        arcs, links = np.flatnonzero(keep_s), np.flatnonzero(keep_l)
        m = LinearModel(time_scale=min(theta, self.cap) if math.isfinite(min(theta, self.cap))
                        else 0.0, presolve=False)
        svars = [m.boolean(f"s[{self.sj[a]},{self.si[a]},{self.st[a]}]") for a in arcs]
        lvars = [m.number(f"h[{self.li[a]},{self.lu[a]},{self.lv[a]}]", 1.0, Dim.COUNT)
                 for a in links]
        pm = PathModel(m, arcs, svars, lvars, links)
        self._flow(pm)
        if not self.overlap and math.isfinite(theta):
            self._stage_times(pm, theta, user_limit)
        self._latency(pm)
        return pm

    def _within(self, theta: float) -> tuple[np.ndarray, np.ndarray]:
        keep_l = self.tau <= theta
        if self.overlap:
            return self.arc_period <= theta, keep_l
        ins, outs = self.neighbour_times
        floor = self.own_time + ins.min(axis=1) + outs.min(axis=1)
        return floor <= theta, keep_l

    def _on_some_path(self, keep_s: np.ndarray, keep_l: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Keep only arcs on some path from the first cut to the last (types unlimited)."""
        size, nt = self.costs.family.size, self.costs.types.n_types
        start_f = np.zeros((size, nt), bool)
        end_f = np.zeros((size, nt), bool)
        start_f[0] = True
        by_end = _groups(self.si, keep_s, size)
        by_start = _groups(self.sj, keep_s, size)
        by_cut = _groups(self.li, keep_l, size)
        for i in range(1, size):
            a = by_end[i]
            end_f[i, self.st[a[start_f[self.sj[a], self.st[a]]]]] = True
            k = by_cut[i]
            start_f[i, self.lv[k[end_f[i, self.lu[k]]]]] = True
        start_b = np.zeros((size, nt), bool)
        end_b = np.zeros((size, nt), bool)
        end_b[-1] = True
        for i in range(size - 1, -1, -1):
            a = by_start[i]
            start_b[i, self.st[a[end_b[self.si[a], self.st[a]]]]] = True
            k = by_cut[i]
            end_b[i, self.lu[k[start_b[i, self.lv[k]]]]] = True
        keep_s = keep_s & start_f[self.sj, self.st] & end_b[self.si, self.st]
        keep_l = keep_l & end_f[self.li, self.lu] & start_b[self.li, self.lv]
        return keep_s, keep_l

    def _flow(self, pm: PathModel) -> None:
        m, nt = pm.model, self.costs.types.n_types
        first: Terms = []
        final: Terms = []
        ends: dict[tuple[int, int], Terms] = {}
        starts: dict[tuple[int, int], Terms] = {}
        per_type: list[Terms] = [[] for _ in range(nt)]
        for a, x in zip(pm.arcs, pm.stage_vars, strict=True):
            j, i, t = int(self.sj[a]), int(self.si[a]), int(self.st[a])
            (first if j == 0 else starts.setdefault((j, t), [])).append((1.0, x))
            (final if i == self.last else ends.setdefault((i, t), [])).append((1.0, x))
            per_type[t].append((1.0, x))
        for a, x in zip(pm.links, pm.link_vars, strict=True):
            i, u, v = int(self.li[a]), int(self.lu[a]), int(self.lv[a])
            ends.setdefault((i, u), []).append((-1.0, x))
            starts.setdefault((i, v), []).append((-1.0, x))
        m.eq(first, -1.0)
        m.eq(final, -1.0)
        for terms in [*ends.values(), *starts.values()]:
            m.eq(terms)
        for t, terms in enumerate(per_type):
            if len(terms) > self.costs.types.counts[t]:
                m.le(terms, -float(self.costs.types.counts[t]))

    def _stage_times(self, pm: PathModel, theta: float, user_limit: bool) -> None:
        """Without overlap: a used stage arc's in + compute + out is at most ``theta``."""
        m = pm.model
        into: dict[tuple[int, int], Terms] = {}
        out_of: dict[tuple[int, int], Terms] = {}
        for a, x in zip(pm.links, pm.link_vars, strict=True):
            i, u, v = int(self.li[a]), int(self.lu[a]), int(self.lv[a])
            into.setdefault((i, v), []).append((float(self.tau[a]), x))
            out_of.setdefault((i, u), []).append((float(self.tau[a]), x))
        for a, x in zip(pm.arcs, pm.stage_vars, strict=True):
            j, i, t = int(self.sj[a]), int(self.si[a]), int(self.st[a])
            terms = into.get((j, t), []) + out_of.get((i, t), [])
            own = float(self.own_time[a])
            if user_limit:
                m.capacity_le(terms, own - theta, Dim.TIME, enforce=(x,))
            else:
                m.time_ge([(-c, v) for c, v in terms], theta - own, enforce=(x,))

    def _latency(self, pm: PathModel) -> None:
        m = pm.model
        terms: Terms = [(float(self.own_time[a]), x)
                        for a, x in zip(pm.arcs, pm.stage_vars, strict=True)]
        terms += [(float(self.tau[a]), x) for a, x in zip(pm.links, pm.link_vars, strict=True)]
        if self.objective == "latency":
            ub = self.cap if math.isfinite(self.cap) else sum(c for c, _ in terms)
            latency = m.number("L", ub, Dim.TIME)
            m.time_ge([(1.0, latency), *[(-c, x) for c, x in terms]])
            m.objective = latency
            return
        if self.max_latency is not None:
            m.capacity_le(terms, -tolerated(self.max_latency), Dim.TIME)
        m.objective = m.number("feasible", 0.0, Dim.COUNT)  # a question of feasibility only

    # -- decoding and hints -------------------------------------------------------------------

    def decode(self, pm: PathModel, values: list[float]) -> Plan | None:
        """The plan of the chosen stage arcs, or ``None`` if they do not form one path."""
        used = sorted((int(self.sj[a]), int(self.si[a]), int(self.st[a]))
                      for a, x in zip(pm.arcs, pm.stage_vars, strict=True) if values[x] > 0.5)
        cuts = [0] + [i for _, i, _ in used]
        if not used or any(j != cuts[b] for b, (j, _, _) in enumerate(used)) or (
                cuts[-1] != self.last):
            return None
        return path_plan(self.inst, self.costs, used)

    def hint(self, pm: PathModel, plan: Plan) -> dict[int, float]:
        """A value for every variable of ``pm`` from ``plan`` (empty when some arc of it is not
        in the model): 1 on its stage and link arcs, 0 elsewhere, and the objective variable
        the plan's latency (the sum of its arcs' times, as the latency row adds them), or 0
        for the feasibility question."""
        path = self._path_of(plan)
        if path is None:
            return {}
        index = {(int(self.sj[a]), int(self.si[a]), int(self.st[a])): x
                 for a, x in zip(pm.arcs, pm.stage_vars, strict=True)}
        links = {(int(self.li[a]), int(self.lu[a]), int(self.lv[a])): x
                 for a, x in zip(pm.links, pm.link_vars, strict=True)}
        chosen = [index.get(arc) for arc in path]
        chosen += [links.get((i, t, path[b + 1][2])) for b, (_, i, t) in enumerate(path[:-1])]
        if any(x is None for x in chosen):
            return {}
        values = dict.fromkeys(range(len(pm.model.vars)), 0.0)
        values.update(dict.fromkeys(chosen, 1.0))  # type: ignore[arg-type]
        if self.objective == "latency":
            times = dict(zip(pm.stage_vars, self.own_time[pm.arcs], strict=True))
            times.update(zip(pm.link_vars, self.tau[pm.links], strict=True))
            values[pm.model.objective] = float(sum(times[x] for x in chosen))  # type: ignore[index]
        return values

    def _path_of(self, plan: Plan) -> list[tuple[int, int, int]] | None:
        """``plan`` as stage arcs (J, I, type), or ``None`` if a cut is not in the family."""
        sigma = np.array(plan.stage_of(self.inst))
        devs = plan.devices(self.inst)
        sets = self.costs.family.sets
        where = {sets[k].tobytes(): k for k in range(len(sets))}
        type_of = {d: t for t, grp in enumerate(self.costs.types.members) for d in grp}
        cuts = [where.get((sigma < b).tobytes()) for b in range(len(devs) + 1)]
        if (sigma < 0).any() or any(k is None for k in cuts) or -1 in devs:
            return None
        return [(int(cuts[b]), int(cuts[b + 1]), type_of[d])  # type: ignore[arg-type]
                for b, d in enumerate(devs)]


def _groups(keys: np.ndarray, keep: np.ndarray, size: int) -> list[np.ndarray]:
    """Indices of kept entries grouped by key (0..size-1)."""
    idx = np.flatnonzero(keep)
    order = idx[np.argsort(keys[idx], kind="stable")]
    bounds = np.searchsorted(keys[order], np.arange(size + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(size)]

