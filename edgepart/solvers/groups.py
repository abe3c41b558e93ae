r"""Exact dynamic program over hybrid plans of a chain: stages on one device, replicated over a
device group, or split over a group layer by layer (``--plan-space``; see :mod:`edgepart.plan`
and the cost model of :mod:`edgepart.cost`).

Which plans it covers. On a chain every stage of a valid plan is a contiguous layer range
:math:`[i, j)` (edges only go forward). A plan is a sequence of such ranges covering
:math:`0..n`, each with a *group mode* :math:`g`: one device (single), a device set of size 2 to
``max_group`` (replicate), or such a set with one of its devices as lead (split), every device in
at most one stage. Every such plan is enumerated implicitly, so the optimum is over *all* valid
plans of the chosen space (with colocation, device classes and memory).

Why the arc costs are exact. Under relay transfers on a chain the boundary at position :math:`j`
carries exactly :math:`B_j` (the output of layer :math:`j-1`; the request input at 0, the model
output at :math:`n`), so a stage's receive and send times depend only on its own ends, its
neighbours' ends and :math:`B_i`, :math:`B_j`; its compute and memory only on
:math:`(i, j, g)`, except the schemes of a split stage. Those are chosen by an inner DP (FlexPie's
DPP, Zhang et al., arXiv 2502.15312, Alg. 1, for one group): a forward pass over the layers of
:math:`[i, j)` with the current layer's scheme as state, adding the same terms in the same order
as :meth:`edgepart.cost.SplitGroup.stage` (scatter, per layer the redistribution into it and its
slowest share, gather). The stage's period and latency terms are non-decreasing in its compute
time, so the time-optimal schemes are optimal for both objectives. Memory: when the fastest
schemes of an arc do not fit, :func:`fitting_schemes` reruns the scheme DP with each device's
weights and largest working set in Pareto labels and takes the fastest schemes that fit.

Outer DP. Latency is a sum of per-stage terms :math:`\mathrm{in}_b + C_b` (a replica group's
slowest) that depend on the previous stage's ends, plus the sink's receive: a shortest path over
states (position, used devices, last group mode). The period is
:math:`\max(\mathrm{out}_{src}, \max_b T_b, \mathrm{in}_{sink})` where :math:`T_b` also depends on
the *next* stage's ends; a state keeps Pareto-optimal labels (max of the finished stages' periods,
the last stage's per-end partial :math:`g(\mathrm{in}_r, C_r)` with :math:`g` = max under
``overlap``, + otherwise), exact because :math:`T_b` is non-decreasing in every partial. With
``--max-latency`` or ``--max-period`` a label keeps both its latency and its period (and the
partials), and a plan counts only within both limits (up to :func:`edgepart.cost.tolerated`).

Size. :math:`O(n^2 \cdot G)` arcs for :math:`G` group modes (:math:`D` singles,
:math:`\binom{D}{k}` replica sets and :math:`k\binom{D}{k}` led split sets per size
:math:`k \le` ``max_group``), with states over subsets of used devices: meant for the handful of
devices FlexPie studies (it refuses more than :data:`MAX_GROUP_MODES` group modes and more than
:data:`MAX_DEVICES` devices; a time limit stops it with no plan). Non-chain models are not
supported (the method says so).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any

from edgepart.cost import LayerShape, SplitGroup, layer_shapes, tolerated
from edgepart.cuts import colocation_cut_ok
from edgepart.formulations.model import Deadline, OutOfTime
from edgepart.instance import Instance
from edgepart.plan import Mode, Plan, Scheme, Stage
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import Objective, PlanSpace, SolveOptions, finish, register

__all__ = [
    "MAX_DEVICES",
    "MAX_GROUP_MODES",
    "GroupMode",
    "fitting_schemes",
    "group_modes",
    "one_group_members",
    "one_group_plan",
    "solve_groups",
    "split_schemes",
]

MAX_GROUP_MODES = 400
"""Most group modes the DP takes (4 devices: 43; 6 devices: 249)."""
MAX_DEVICES = 10
"""Most devices: the DP's states are sets of used devices (pipeline plans on more devices: the
``auto`` exact methods)."""

MODES = {PlanSpace.PIPELINE: (Mode.SINGLE,), PlanSpace.REPLICATE: (Mode.SINGLE, Mode.REPLICATE),
         PlanSpace.SPLIT: (Mode.SINGLE, Mode.SPLIT), PlanSpace.HYBRID: tuple(Mode)}


@dataclass(frozen=True, slots=True)
class GroupMode:
    """Devices (lead first for split) and how a stage uses them."""

    mode: Mode
    members: tuple[int, ...]

    @property
    def mask(self) -> int:
        return sum(1 << d for d in self.members)

    @property
    def ends(self) -> tuple[int, ...]:
        """Devices that send and receive the stage's boundary messages."""
        return self.members if self.mode is Mode.REPLICATE else self.members[:1]


def group_modes(inst: Instance, space: PlanSpace, max_group: int | None) -> list[GroupMode]:
    """Every group mode of the plan space: singles, replica sets, led split sets."""
    nd = len(inst.devices)
    largest = min(nd, max_group or nd)
    modes = MODES[space]
    out = [GroupMode(Mode.SINGLE, (d,)) for d in range(nd)]
    for size in range(2, largest + 1):
        for subset in combinations(range(nd), size):
            if Mode.REPLICATE in modes:
                out.append(GroupMode(Mode.REPLICATE, subset))
            if Mode.SPLIT in modes:
                out += [GroupMode(Mode.SPLIT, (lead, *(d for d in subset if d != lead)))
                        for lead in subset]
    return out


@dataclass
class Arc:
    """A stage [i, j) in group mode g: per-end compute, and the split schemes."""

    i: int
    j: int
    g: GroupMode
    compute: tuple[float, ...]
    schemes: dict[int, Scheme] = field(default_factory=dict)
    mask: int = 0

    def __post_init__(self) -> None:
        self.mask = self.g.mask


def split_schemes(group: SplitGroup, layers: Sequence[int], in_bytes: float
                  ) -> list[tuple[float, dict[int, Scheme]]]:
    """For every end j of the stage starting at ``layers[0]`` (``layers`` = the layers from
    there to the end of the chain), the least split time of ``layers[:j+1]`` and its schemes
    (FlexPie's DPP for one group; ``math.inf`` where a layer cannot be split)."""
    shapes: list[LayerShape | None] = [group.shapes[v] for v in layers]
    out: list[tuple[float, dict[int, Scheme]]] = []
    first = shapes[0]
    if first is None:
        return out
    # best[s] = (time so far, anchor, schemes) with the current layer's anchor in scheme s
    best: dict[Scheme, tuple[float, int, dict[int, Scheme]]] = {}
    for s in first.schemes:
        t = group.entry(layers[0], s, in_bytes)[0]
        best[s] = (t + group.compute_share(layers[0], layers[0], s), layers[0],
                   {layers[0]: s})
    for pos, v in enumerate(layers):
        if pos > 0:
            shape = shapes[pos]
            if shape is None:
                break
            best = _extend(group, best, layers[pos - 1], v, shape)
            if not best:
                break
        out.append(min(((t + group.exit(v, a, s), sch) for s, (t, a, sch) in best.items()),
                       key=lambda x: x[0]))
    return out


def _extend(group: SplitGroup, best: dict[Scheme, tuple[float, int, dict[int, Scheme]]],
            u: int, v: int, shape: LayerShape
            ) -> dict[Scheme, tuple[float, int, dict[int, Scheme]]]:
    """One step of the scheme DP: layer v after u (an elementwise v keeps u's scheme)."""
    nxt: dict[Scheme, tuple[float, int, dict[int, Scheme]]] = {}
    if shape.kind == "elementwise":
        for s, (t, a, sch) in best.items():
            t2 = t + group.into(u, a, v, a, s, s)[0]
            nxt[s] = (t2 + group.compute_share(v, a, s), a, sch)
        return nxt
    for s2 in shape.schemes:
        comp = group.compute_share(v, v, s2)
        options = [((t + group.into(u, a, v, v, s, s2)[0]) + comp, s, a, sch)
                   for s, (t, a, sch) in best.items()]
        t, _, _, sch = min(options, key=lambda x: x[0])
        nxt[s2] = (t, v, {**sch, v: s2})
    return nxt


@dataclass(frozen=True, slots=True)
class _MemLabel:
    """A partial scheme choice: time so far, anchor, schemes, and per device the weights held
    and the largest working set so far."""

    time: float
    anchor: int
    schemes: dict[int, Scheme]
    weights: tuple[float, ...]
    peaks: tuple[float, ...]

    def dominates(self, other: _MemLabel) -> bool:
        return (self.time <= other.time
                and all(a <= b for a, b in zip(self.weights, other.weights, strict=True))
                and all(a <= b for a, b in zip(self.peaks, other.peaks, strict=True)))


def _keep(labels: list[_MemLabel], new: _MemLabel) -> list[_MemLabel]:
    if any(o.dominates(new) for o in labels):
        return labels
    return [o for o in labels if not new.dominates(o)] + [new]


def _add(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _peak(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    return tuple(max(x, y) for x, y in zip(a, b, strict=True))


def fitting_schemes(group: SplitGroup, layers: Sequence[int], in_bytes: float,
                    caps: Sequence[float], deadline: Deadline
                    ) -> tuple[float, dict[int, Scheme]] | None:
    """The least split time of ``layers`` over schemes whose memory (weights held + largest
    working set, see :meth:`edgepart.cost.SplitGroup.stage`) is within ``caps`` per device, or
    ``None``. Exact: a label is dropped only when another is no slower and holds no more
    weights and no larger working set on any device, so every completion of the dropped one is
    matched by a completion of the other."""
    labels: dict[Scheme, list[_MemLabel]] = {}
    v0 = layers[0]
    for s in group.shape(v0).schemes:
        t, recv = group.entry(v0, s, in_bytes)
        labels[s] = [_MemLabel(t + group.compute_share(v0, v0, s), v0, {v0: s},
                               tuple(group.weights(v0, v0, s)),
                               tuple(group.layer_memory(v0, v0, s, recv)))]
    for u, v in pairwise(layers):
        deadline.check()
        nxt: dict[Scheme, list[_MemLabel]] = {}
        keep_scheme = group.shape(v).kind == "elementwise"
        for s, bucket in labels.items():
            for lab in bucket:
                for s2 in ((s,) if keep_scheme else group.shape(v).schemes):
                    a2 = lab.anchor if keep_scheme else v
                    t, recv = group.into(u, lab.anchor, v, a2, s, s2)
                    new = _MemLabel((lab.time + t) + group.compute_share(v, a2, s2), a2,
                                    lab.schemes if keep_scheme else {**lab.schemes, v: s2},
                                    _add(lab.weights, group.weights(v, a2, s2)),
                                    _peak(lab.peaks, group.layer_memory(v, a2, s2, recv)))
                    nxt[s2] = _keep(nxt.get(s2, []), new)
        labels = nxt
    last = layers[-1]
    done = [(lab.time + group.exit(last, lab.anchor, s), lab.schemes)
            for s, bucket in labels.items() for lab in bucket
            if all(w + p <= tolerated(c) for w, p, c in zip(lab.weights, lab.peaks, caps,
                                                             strict=True))]
    return min(done, key=lambda x: x[0]) if done else None


class _Problem:
    """Arc costs of one instance, plan space and group limit."""

    def __init__(self, inst: Instance, options: SolveOptions, deadline: Deadline) -> None:
        self.inst = inst
        self.n = len(inst.model.layers)
        self.overlap = inst.cost_model.overlap
        g = inst.model
        self.bytes_at = [g.input_bytes, *(g.tensor_bytes[v] for v in range(self.n))]
        self.cut_ok = [bool(x) for x in colocation_cut_ok(inst)]
        self.shapes = self._shapes()
        self.modes = group_modes(inst, options.plan_space, options.max_group)
        self.deadline = deadline
        self._boundary: dict[tuple[tuple[int | None, ...], tuple[int | None, ...], int],
                             tuple[list[float], list[float]]] = {}
        self.arcs = self._arcs()
        best = [min(row) for row in inst.times]
        self.rest = [sum(best[v:]) for v in range(self.n + 1)]
        self.speed = [max((best[v] / t for v, t in enumerate(col) if 0 < t < math.inf),
                          default=0.0) for col in zip(*inst.times, strict=True)]

    def rest_bound(self, pos: int, used: int) -> float:
        """A lower bound on the latency, and on the period, of layers pos.. on the devices not
        in ``used``: their best times over the free devices' summed speed (as in
        :func:`edgepart.cost.lower_bound`; split shares and replicas only add overheads)."""
        if self.rest[pos] == 0:
            return 0.0
        cap = sum(s for d, s in enumerate(self.speed) if not used >> d & 1)
        return self.rest[pos] / cap if cap > 0 else math.inf

    def _shapes(self) -> tuple[LayerShape | None, ...]:
        return layer_shapes(self.inst)

    def _arcs(self) -> dict[int, list[Arc]]:
        """Feasible arcs by start position."""
        out: dict[int, list[Arc]] = {i: [] for i in range(self.n)}
        kinds = self._kinds()
        split_done: dict[tuple[int, ...], list[Arc]] = {}
        for gm in self.modes:
            self.deadline.check()
            if gm.mode is not Mode.SPLIT:
                self._whole_arcs(gm, out)
                continue
            signature = tuple(kinds[d] for d in gm.members)
            if signature not in split_done:
                split_done[signature] = self._split_arcs(gm)
            for arc in split_done[signature]:
                out[arc.i].append(Arc(arc.i, arc.j, gm, arc.compute, arc.schemes))
        return out

    def _kinds(self) -> list[int]:
        """An id per device; devices with one id are interchangeable in a split group (same
        class, memory and speed, neither the source nor the sink, every link the same), so a
        split group's arcs depend only on the ids of its members in order: computed once."""
        inst = self.inst
        ends = {inst.source_index, inst.sink_index}
        keys: dict[tuple[object, ...], int] = {}
        out = []
        for d, dev in enumerate(inst.devices):
            key: tuple[object, ...] = ((dev.cls, dev.memory_bytes, dev.flops_per_s)
                                       if inst.uniform_links and d not in ends else (d,))
            out.append(keys.setdefault(key, len(keys)))
        return out

    def _whole_arcs(self, gm: GroupMode, out: dict[int, list[Arc]]) -> None:
        """Arcs of a single device or a replica set: every member runs the whole range."""
        times, layers = self.inst.times, self.inst.model.layers
        cap = min(tolerated(self.inst.devices[d].memory_bytes) for d in gm.members)
        for i in range(self.n):
            compute = [0.0] * len(gm.members)
            params, work = 0.0, 0.0  # summed and maxed in layer order, as the evaluator does
            for j in range(i + 1, self.n + 1):
                for k, d in enumerate(gm.members):
                    compute[k] += times[j - 1][d]
                params += layers[j - 1].param_bytes
                work = max(work, layers[j - 1].work_bytes)
                if not all(math.isfinite(c) for c in compute) or params > cap:
                    break
                if self.cut_ok[j] and params + work + self._buffers(i, j, gm) <= cap:
                    out[i].append(Arc(i, j, gm, tuple(compute)))

    def _split_arcs(self, gm: GroupMode) -> list[Arc]:
        group = SplitGroup(self.inst, gm.members, self.shapes)
        out = []
        for i in range(self.n):
            self.deadline.check()
            layers = list(range(i, self.n))
            for offset, (t, schemes) in enumerate(split_schemes(group, layers,
                                                                self.bytes_at[i])):
                j = i + offset + 1
                if not all(math.isfinite(self.inst.times[j - 1][d]) for d in gm.members):
                    break
                if not self.cut_ok[j]:
                    continue
                arc = Arc(i, j, gm, (t,), schemes)
                if self._surely_fits(arc) or self._fits_split(arc, group.stage(
                        list(range(i, j)), schemes, self.bytes_at[i]).member_memory_bytes):
                    out.append(arc)
                    continue
                fitting = self._fitting(group, arc)
                if fitting is not None:
                    out.append(fitting)
        return out

    def _fitting(self, group: SplitGroup, arc: Arc) -> Arc | None:
        """The fastest schemes of the stage among those that fit every device's memory, by the
        scheme DP with memory in its labels (:func:`fitting_schemes`)."""
        caps = [self.inst.devices[d].memory_bytes for d in arc.g.members]
        caps[0] -= self._buffers(arc.i, arc.j, arc.g)
        found = fitting_schemes(group, list(range(arc.i, arc.j)), self.bytes_at[arc.i], caps,
                                self.deadline)
        return None if found is None else Arc(arc.i, arc.j, arc.g, (found[0],), found[1])

    def _buffers(self, i: int, j: int, gm: GroupMode) -> float:
        """Receive plus send buffer bytes of the stage's ends (none toward its own device)."""
        inst = self.inst
        ends = list(gm.ends)
        nothing_in = i == 0 and (inst.source is None or ends == [inst.source_index])
        nothing_out = j == self.n and (inst.sink is None or ends == [inst.sink_index])
        return (0.0 if nothing_in else self.bytes_at[i]) + (
            0.0 if nothing_out else self.bytes_at[j])

    def _surely_fits(self, arc: Arc) -> bool:
        """A split stage's memory is at most a whole copy of every layer's weights plus, per
        layer, its whole working set and its whole input (what it may receive): if that fits,
        the exact figure does."""
        layers = range(arc.i, arc.j)
        model = self.inst.model
        peak = max(model.layers[v].work_bytes + self.bytes_at[v] for v in layers)
        need = (sum(model.layers[v].param_bytes for v in layers) + peak
                + self._buffers(arc.i, arc.j, arc.g))
        return all(need <= tolerated(self.inst.devices[d].memory_bytes) for d in arc.g.members)

    def _fits_split(self, arc: Arc, memory: Sequence[float]) -> bool:
        need = [memory[0] + self._buffers(arc.i, arc.j, arc.g), *memory[1:]]
        return all(need[k] <= tolerated(self.inst.devices[d].memory_bytes)
                   for k, d in enumerate(arc.g.members))

    # -- transfers ----------------------------------------------------------------------------

    def boundary(self, senders: Sequence[int | None], receivers: Sequence[int | None], j: int
                 ) -> tuple[list[float], list[float]]:
        """Per-sender and per-receiver seconds of boundary j (each end's worst partner)."""
        key = (tuple(senders), tuple(receivers), j)
        if key not in self._boundary:
            self._boundary[key] = self._transfer(senders, receivers, j)
        return self._boundary[key]

    def _transfer(self, senders: Sequence[int | None], receivers: Sequence[int | None], j: int
                  ) -> tuple[list[float], list[float]]:
        if list(senders) == list(receivers):
            return [0.0] * len(senders), [0.0] * len(receivers)
        t = [[self.inst.transfer_time(s, r, self.bytes_at[j]) for r in receivers]
             for s in senders]
        return [max(row) for row in t], [max(row[k] for row in t) for k in range(len(receivers))]

    def source_ends(self) -> list[int | None] | None:
        return None if self.inst.source is None else [self.inst.source_index]

    def into(self, prev: Sequence[int | None] | None, arc: Arc) -> tuple[list[float], float]:
        """Receive seconds per end of ``arc`` after ends ``prev`` (None: no source), and the
        sender's worst send."""
        if prev is None:
            return [0.0] * len(arc.g.ends), 0.0
        send, recv = self.boundary(prev, arc.g.ends, arc.i)
        return recv, max(send)

    def out_of(self, arc: Arc, nxt: Sequence[int | None] | None) -> list[float]:
        if nxt is None:
            return [0.0] * len(arc.g.ends)
        return self.boundary(arc.g.ends, nxt, arc.j)[0]

    def sink_ends(self) -> list[int | None] | None:
        return None if self.inst.sink is None else [self.inst.sink_index]

    def latency_term(self, recv: Sequence[float], arc: Arc) -> float:
        return max(r + c for r, c in zip(recv, arc.compute, strict=True))

    def partial(self, recv: Sequence[float], arc: Arc) -> tuple[float, ...]:
        return tuple(max(r, c) if self.overlap else r + c
                     for r, c in zip(recv, arc.compute, strict=True))

    def period(self, partial: Sequence[float], out: Sequence[float]) -> float:
        own = [max(p, o) if self.overlap else p + o for p, o in zip(partial, out, strict=True)]
        return own[0] if len(own) == 1 else (
            0.0 if min(own) == 0 else 1.0 / sum(1.0 / t for t in own))


@dataclass(frozen=True)
class _Goal:
    """The objective and the limits (``--max-latency``, ``--max-period``; inf: none)."""

    objective: Objective
    max_latency: float = math.inf
    max_period: float = math.inf

    @property
    def capped(self) -> bool:
        return math.isfinite(self.max_latency) or math.isfinite(self.max_period)

    def value(self, latency: float, period: float) -> float:
        """The objective of a plan, ``inf`` when it breaks a limit."""
        if latency > tolerated(self.max_latency) or period > tolerated(self.max_period):
            return math.inf
        return latency if self.objective is Objective.LATENCY else period


@dataclass
class _Label:
    lat: float  # the stages' latency terms so far
    per: float  # the largest finished stage period so far (and the source's send)
    partial: tuple[float, ...]  # the last stage's per-end partial times
    arc: Arc | None
    back: _Label | None


def _key(goal: _Goal, label: _Label) -> tuple[float, ...]:
    """What dominance compares: everything the rest of the plan can still add to."""
    if goal.capped:
        return (label.lat, label.per, *label.partial)
    if goal.objective is Objective.LATENCY:
        return (label.lat,)
    return (label.per, *label.partial)


def _dominated(goal: _Goal, label: _Label, others: list[_Label]) -> bool:
    mine = _key(goal, label)
    return any(all(a <= b for a, b in zip(_key(goal, o), mine, strict=True)) for o in others)


def _search(prob: _Problem, goal: _Goal, arcs: dict[int, list[Arc]]
            ) -> tuple[float, _Label | None]:
    """Forward DP over (position, used devices, last group mode); labels as in the docstring.

    Pruning (exact): latency and period only grow along a path (a sum of non-negative terms; a
    max), so a label or an arc whose lower bound (:func:`_lower`: the label's latency or period,
    the last stage's period with free transfers, the remaining layers' bound
    :meth:`_Problem.rest_bound`; an arc's own compute) is no better than the best finished plan,
    or already breaks a limit, cannot lead to a better valid plan. The first incumbents are the
    one-stage plans."""
    start = _Label(0.0, 0.0, (), None, None)
    best: tuple[float, _Label | None] = (math.inf, None)
    for arc in arcs[0]:
        if arc.j == prob.n:
            recv, send = prob.into(prob.source_ends(), arc)
            label = _step(prob, start, None, arc, recv, send)
            value = _final(prob, goal, label, arc.g)
            if value < best[0]:
                best = (value, label)
    # at[pos][(used devices, last group mode)] = labels
    at: list[dict[tuple[int, GroupMode | None], list[_Label]]] = [{} for _ in range(prob.n + 1)]
    at[0][(0, None)] = [start]
    steps = 0
    for pos in range(prob.n):
        for (used, last), found in at[pos].items():
            labels = [x for x in found if _lower(prob, goal, x, pos, used) < best[0]]
            prev = list(last.ends) if last is not None else prob.source_ends()
            for arc in arcs[pos]:
                steps += 1
                prob.deadline.check_every(steps, 2_000)
                if arc.mask & used or _arc_lower(prob, goal, arc) >= best[0]:
                    continue
                recv, send_prev = prob.into(prev, arc)
                nused = used | arc.mask
                for label in labels:
                    new = _step(prob, label, last, arc, recv, send_prev)
                    if _lower(prob, goal, new, arc.j, nused) >= best[0]:
                        continue
                    if arc.j == prob.n:
                        value = _final(prob, goal, new, arc.g)
                        if value < best[0]:
                            best = (value, new)
                        continue
                    bucket = at[arc.j].setdefault((nused, arc.g), [])
                    if not _dominated(goal, new, bucket):
                        bucket[:] = [o for o in bucket if not _dominated(goal, o, [new])] + [new]
        at[pos].clear()
    return best


def _lower(prob: _Problem, goal: _Goal, label: _Label, pos: int, used: int) -> float:
    """A lower bound on every plan that extends ``label`` (at ``pos`` with ``used`` devices);
    ``inf`` when every such plan breaks a limit."""
    rest = prob.rest_bound(pos, used)
    last = prob.period(label.partial, [0.0] * len(label.partial)) if label.partial else 0.0
    return goal.value(label.lat + rest, max(label.per, last, rest))


def _arc_lower(prob: _Problem, goal: _Goal, arc: Arc) -> float:
    """A lower bound on the objective of any plan with this stage (its compute alone)."""
    return goal.value(max(arc.compute), prob.period(arc.compute, [0.0] * len(arc.compute)))


def _step(prob: _Problem, label: _Label, last: GroupMode | None, arc: Arc, recv: list[float],
          send_prev: float) -> _Label:
    lat = label.lat + prob.latency_term(recv, arc)
    if last is None or label.arc is None:  # the source's send is part of the period
        per = send_prev
    else:
        per = max(label.per, prob.period(label.partial, prob.out_of(label.arc, arc.g.ends)))
    return _Label(lat, per, prob.partial(recv, arc), arc, label)


def _final(prob: _Problem, goal: _Goal, label: _Label, last: GroupMode | None) -> float:
    if label.arc is None or last is None:
        return math.inf
    sink = prob.sink_ends()
    out = prob.out_of(label.arc, sink)
    sink_recv = 0.0 if sink is None else prob.boundary(last.ends, sink, prob.n)[1][0]
    return goal.value(label.lat + sink_recv,
                      max(label.per, prob.period(label.partial, out), sink_recv))


def _plan(inst: Instance, label: _Label) -> Plan:
    arcs: list[Arc] = []
    node: _Label | None = label
    while node is not None and node.arc is not None:
        arcs.append(node.arc)
        node = node.back
    return Plan(tuple(_stage(inst, arc) for arc in reversed(arcs)), inst.name, "groups")


def _stage(inst: Instance, arc: Arc) -> Stage:
    ids = [x.id for x in inst.model.layers[arc.i:arc.j]]
    devices = [inst.devices[d].id for d in arc.g.members]
    if arc.g.mode is Mode.SINGLE:
        return Stage(devices[0], tuple(ids))
    schemes = {inst.model.layers[v].id: s for v, s in arc.schemes.items()}
    return Stage.group(devices, arc.g.mode, ids, schemes)


def one_group_members(inst: Instance) -> tuple[int, ...]:
    """Every device, the lead first: the source (which holds the input) or else the fastest
    device (least total time over the layers)."""
    if inst.source_index is not None:
        lead = inst.source_index
    else:
        lead = min(range(len(inst.devices)),
                   key=lambda d: sum(inst.times[v][d] for v in range(len(inst.model.layers))))
    return (lead, *(d for d in range(len(inst.devices)) if d != lead))


def one_group_plan(inst: Instance, mode: Mode, schemes: dict[int, Scheme] | None = None,
                   method: str = "") -> Plan:
    """The whole model as one stage on every device (:func:`one_group_members`), replicated or
    split with ``schemes`` (layer index -> scheme)."""
    members = one_group_members(inst)
    arc = Arc(0, len(inst.model.layers), GroupMode(mode, members), (), schemes or {})
    return Plan((_stage(inst, arc),), inst.name, method)


def _refusal(inst: Instance, options: SolveOptions) -> str:
    if not inst.model.is_chain:
        return f"needs a chain model ({inst.model.name} is a DAG)"
    if inst.cost_model.transfer.value != "relay":
        return "device groups need relay transfers"
    if len(inst.devices) > MAX_DEVICES:
        return (f"tracks which devices are used: at most {MAX_DEVICES} devices, got "
                f"{len(inst.devices)}")
    count = len(group_modes(inst, options.plan_space, options.max_group))
    if count > MAX_GROUP_MODES:
        return (f"{count} group modes (limit {MAX_GROUP_MODES}): lower --max-group or use fewer "
                "devices")
    return ""


@register("groups")
def solve_groups(inst: Instance, options: SolveOptions) -> SolveResult:
    """The optimum over the plan space (``options.plan_space``) on a chain, proven by the DP."""
    start = time.perf_counter()
    reason = _refusal(inst, options)
    if reason:
        return finish(inst, None, method="groups", options=options,
                      termination=Termination.UNSUPPORTED, message=reason)
    deadline = Deadline.after(options.time_limit)
    try:
        prob = _Problem(inst, options, deadline)
        goal = _Goal(options.objective,
                     math.inf if options.max_latency is None else options.max_latency,
                     math.inf if options.max_period is None else options.max_period)
        bound, label = _search(prob, goal, prob.arcs)
    except OutOfTime:
        return finish(inst, None, method="groups", options=options,
                      termination=Termination.TIME_LIMIT, wall_time_s=time.perf_counter() - start,
                      message="time limit before the DP finished")
    wall = time.perf_counter() - start
    extra: dict[str, Any] = {"plan_space": options.plan_space.value,
                             "group_modes": len(prob.modes),
                             "arcs": sum(len(a) for a in prob.arcs.values())}
    if label is None:
        return finish(inst, None, method="groups", options=options,
                      termination=Termination.INFEASIBLE, wall_time_s=wall, extra=extra,
                      message="no plan of this plan space fits memory, device classes and "
                              "limits")
    return finish(inst, _plan(inst, label), method="groups", options=options,
                  termination=Termination.OPTIMAL, bound=bound, wall_time_s=wall, exact=True,
                  extra=extra)
