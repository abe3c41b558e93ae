r"""Exact dynamic program over hybrid plans: stages on one device, replicated over a device
group, or split over a group layer by layer (``--plan-space``; see :mod:`edgepart.plan` and the
cost model of :mod:`edgepart.cost`), on chains and DAGs; where it does not fit, the best known
plan with a proven lower bound.

Which plans it covers. A plan is a chain of cuts :math:`\emptyset = I_0 \subsetneq \dots
\subsetneq I_k = V` (predecessor-closed layer sets: the prefixes of a chain, every ideal of a
DAG, as in :func:`edgepart.solvers.dp.solve_dp_ideals`; none splitting a colocate group), stage
:math:`b` running :math:`I_{b+1} \setminus I_b` in a *group mode* :math:`g`: one device
(single), a device set of size 2 to ``max_group`` (replicate), or such a set with one of its
devices as lead and the others in index order (split; as :mod:`edgepart.solvers.brute` lists
them: other orders of the same devices, which the validator also accepts and which may cost
otherwise, are not searched), every device in at most one stage. Single and replicate stages may be
any cut step; a split stage only a step whose layers form a path
(:func:`edgepart.cost.split_path_problem`, the rule the validator applies): every such step is a
prefix of the longest path from its first layer (:attr:`_Problem.split_paths`), so the DP enumerates
exactly the validator's split stages. Every valid plan of the chosen space is enumerated
implicitly (with colocation, device classes and memory).

Why the arc costs are exact. Under relay transfers the boundary after cut :math:`I` carries
exactly :math:`B(I)` (:func:`edgepart.cuts.alive_bytes`: every tensor produced inside and read
outside; the request input while an entry is outside), so a stage's receive and send times
depend only on its own cuts, its neighbours' ends and :math:`B`; its compute and memory only on
the step and :math:`g`, except the schemes of a split stage. Those are chosen by an inner DP
(FlexPie's DPP, Zhang et al., arXiv 2502.15312, Alg. 1, for one group): a forward pass over the
layers of the path with the current layer's scheme as state, adding the same terms in the same
order as :meth:`edgepart.cost.SplitGroup.stage` (scatter, per layer the redistribution into it
and its slowest share, gather). The stage's period and latency terms are non-decreasing in its
compute time, so the time-optimal schemes are optimal for both objectives. Memory: when the
fastest schemes of an arc do not fit, :func:`fitting_schemes` reruns the scheme DP with each
device's weights and largest working set in Pareto labels and takes the fastest schemes that fit.

Outer DP. Latency is a sum of per-stage terms :math:`\mathrm{in}_b + C_b` (a replica group's
slowest) that depend on the previous stage's ends, plus the sink's receive: a shortest path over
states (cut, used devices per type, last group mode). The period is
:math:`\max(\mathrm{out}_{src}, \max_b T_b, \mathrm{in}_{sink})` where :math:`T_b` also depends on
the *next* stage's ends; a state keeps Pareto-optimal labels (max of the finished stages' periods,
the last stage's per-end partial :math:`g(\mathrm{in}_r, C_r)` with :math:`g` = max under
``overlap``, + otherwise), exact because :math:`T_b` is non-decreasing in every partial. With
``--max-latency`` or ``--max-period`` a label keeps both its latency and its period (and the
partials), and a plan counts only within both limits (up to :func:`edgepart.cost.tolerated`).

Interchangeable devices. :func:`device_types` groups devices into types :math:`t` of
:math:`n_t` devices (same class, memory and speed, so the same layer times and capacity; the
same link to every other device and to each other; the source and the sink alone), each type a
run of consecutive indices. A group mode is then a multiset :math:`k = (k_t)` of types (for
split also the lead's type), priced once on its *canonical* devices, the first :math:`k_t` of
each type (:func:`group_modes`); a state keeps the counts :math:`c_t` of used devices per type,
:math:`\prod_t (n_t + 1)` states instead of :math:`2^D`; and the path's stage :math:`b` runs on
the devices :math:`c_t, \dots, c_t + k_t - 1` of each type (:func:`_realise`; the lead the first
of them of its type, the others in index order).

*The reduction loses no plan and invents none.* (1) A permutation :math:`\pi` of the devices
that maps each type onto itself changes no number the cost model or the validator reads: the
times, classes and capacities are those of the type; a message between two different devices
costs the link of their pair of types; the source and sink are fixed. So a plan and its image
under :math:`\pi` are both valid or both not, with the same latency and period. (2) Swapping two
devices of one type inside one split group is such a :math:`\pi` (no other stage holds them), so
the order of a group's devices within a type does not matter; and since a type is a run of
indices, index order lists a group's devices type by type, in the order of the types. (3) Take
any plan of the space; number each type's devices in the order its stages use them (a split
stage's lead first) and let
:math:`\pi` send the :math:`i`-th used to the :math:`i`-th of the type. The image uses, at stage
:math:`b`, exactly the devices the DP's path realises for the same multisets (by (2) in the same
member order up to swaps within a type), with the same objective by (1). (4) Conversely, a path
realises to a plan in which no device is in two stages (:math:`c_t + k_t \le n_t` on every arc),
whose arcs cost what the canonical devices cost (a type-preserving map, (1)), and whose
transfers the DP charges by types (:meth:`_Problem.boundary`: two ends of one type are one
device only when the type has one device). So the DP's optimum is a plan's objective, and the
plan (checked again by :func:`edgepart.solvers.base.finish`) is valid.

Size. :math:`P \cdot G` arcs for :math:`P` cut pairs and :math:`G` group modes (per multiset of
types of size :math:`\le` ``max_group``: a single device, a replica set, a split set per type in
it as lead; no split sets when no layer has a shape; with :math:`D` distinct devices
:math:`D + \sum_k (1 + k)\binom{D}{k}`), meant for the handful of devices FlexPie studies. Arcs
are priced lazily: the one-stage plans first (the first incumbent), then those from a cut only
when the search reaches it with a label left, and only those whose compute alone could beat the
incumbent (:meth:`_Problem.arcs_from`). The DP is not tried beyond :data:`MAX_STATES` states,
:data:`MAX_GROUP_MODES` group modes, :data:`edgepart.cuts.MAX_IDEALS` ideals or
:data:`MAX_WORK` arcs, nor for the latency when nothing can be split and the period is free
(the pipeline optimum is then the hybrid one, :func:`_pipeline_latency_is_hybrid`), and it gets
half of the time limit (:data:`DP_SECONDS` without one). Then, and under direct transfers (where the
validator refuses every group, so the plan space is the pipeline plans), the answer is the best
of the pipeline optimum (``auto``, exact over pipeline plans, which are hybrid plans), the warm
start and the group baselines of the plan space (:data:`BASELINES`), with the bound
:func:`hybrid_lower_bound` (and the pipeline solver's bound where the space holds only pipeline
plans): never worse than the pipeline optimum once ``auto`` proves it, called optimal only when
the bound meets the objective (:func:`edgepart.solvers.base.finish`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import pairwise, product
from typing import Any

import numpy as np

from edgepart.bounds import work_bound
from edgepart.cost import (
    LayerShape,
    SplitGroup,
    layer_shapes,
    reads_producer,
    split_input_bytes,
    tolerated,
)
from edgepart.cuts import (
    MAX_IDEALS,
    CutFamily,
    DeviceTypes,
    alive_bytes,
    ideal_family,
    prefix_family,
)
from edgepart.formulations.model import Deadline, OutOfTime
from edgepart.instance import Instance, Transfer
from edgepart.plan import Mode, Plan, Scheme, Stage
from edgepart.results import SolutionStatus, SolveResult, Termination
from edgepart.solvers.base import (
    Objective,
    PlanSpace,
    SolveOptions,
    best_plan,
    finish,
    get_method,
    register,
)

__all__ = [
    "BASELINES",
    "DP_SECONDS",
    "MAX_GROUP_MODES",
    "MAX_STATES",
    "MAX_WORK",
    "GroupMode",
    "device_types",
    "fitting_schemes",
    "group_modes",
    "hybrid_lower_bound",
    "one_group_members",
    "one_group_plan",
    "solve_groups",
    "split_schemes",
]

MAX_GROUP_MODES = 400
"""Most group modes the DP takes (4 distinct devices: 43; 6: 249; 8 devices in the 5 types
1, 2, 3, 1, 1 of the shipped 8-node clusters: 208)."""
MAX_STATES = 4096
"""Most used-device states (multisets of device types, :func:`device_types`; 10 distinct
devices: 1,024) before the DP is not tried: its states would be too many to list."""
DP_SECONDS = 120.0
"""The DP's time without a time limit (with one: half of it); then the fallback answers. The
arc and state limits below let in instances whose search the bounds do not cut short (the
memory-tight 8-node clusters' periods: not done in 100 s)."""
MAX_WORK = 20_000_000
"""Most arcs (cut pairs x group modes) before the DP is not tried: a size measure, not its work
(the arcs are priced only from the cuts the search reaches, only those that could beat the
incumbent, and the labels are pruned by bound)."""

MODES = {PlanSpace.PIPELINE: (Mode.SINGLE,), PlanSpace.REPLICATE: (Mode.SINGLE, Mode.REPLICATE),
         PlanSpace.SPLIT: (Mode.SINGLE, Mode.SPLIT), PlanSpace.HYBRID: tuple(Mode)}


@dataclass(frozen=True, slots=True)
class GroupMode:
    """Devices (lead first for split) and how a stage uses them."""

    mode: Mode
    members: tuple[int, ...]

    @property
    def ends(self) -> tuple[int, ...]:
        """Devices that send and receive the stage's boundary messages."""
        return self.members if self.mode is Mode.REPLICATE else self.members[:1]


def device_types(inst: Instance) -> DeviceTypes:
    """Interchangeable devices (:meth:`edgepart.cuts.DeviceTypes.of`: same class, memory and
    speed, the same link to every other device and to each other; the source and the sink
    alone), each type cut further into runs of consecutive device indices, so that listing any
    devices in index order lists them by type (a split group's member order,
    :func:`group_modes`)."""
    runs: list[tuple[int, ...]] = []
    for members in DeviceTypes.of(inst, range(len(inst.devices))).members:
        run = [members[0]]
        for d in members[1:]:
            if d != run[-1] + 1:
                runs.append(tuple(run))
                run = []
            run.append(d)
        runs.append(tuple(run))
    return DeviceTypes(tuple(sorted(runs)))


def group_modes(inst: Instance, space: PlanSpace, max_group: int | None,
                types: DeviceTypes | None = None) -> list[GroupMode]:
    """Every group mode of the plan space up to interchangeable devices: per multiset of device
    types (``types``, default :func:`device_types`) of size 1 to ``max_group``, its canonical
    devices (the first of each type) as a single device, a replica set, and a split set led by
    the first device of each type in it, the others in index order (the order
    :mod:`edgepart.solvers.brute` uses). With every device a type of its own: every device,
    every replica set, every led split set."""
    types = types or device_types(inst)
    largest = min(len(inst.devices), max_group or len(inst.devices))
    modes = MODES[space]
    singles, groups = [], []
    for counts in product(*(range(len(m) + 1) for m in types.members)):
        members = sorted(d for m, k in zip(types.members, counts, strict=True) for d in m[:k])
        if len(members) == 1:
            singles.append(GroupMode(Mode.SINGLE, tuple(members)))
        elif 2 <= len(members) <= largest:
            if Mode.REPLICATE in modes:
                groups.append(GroupMode(Mode.REPLICATE, tuple(members)))
            if Mode.SPLIT in modes:
                groups += [GroupMode(Mode.SPLIT, (m[0], *(d for d in members if d != m[0])))
                           for m, k in zip(types.members, counts, strict=True) if k]
    return singles + sorted(groups, key=lambda g: len(g.members))


@dataclass
class Arc:
    """A stage from cut i to cut j in group mode g: per-end compute, and the split schemes."""

    i: int
    j: int
    g: GroupMode
    compute: tuple[float, ...]
    schemes: dict[int, Scheme] = field(default_factory=dict)
    need: tuple[tuple[int, int], ...] = ()  # (type, devices of it), set by _Problem
    code: int = 0  # the used-device state it adds (need in the states' mixed radix)


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
    """Arc costs of one instance and its group modes over a family of cuts (the
    prefixes of a chain, the ideals of a DAG): arcs go from cut ``lo`` to cut ``hi``, the stage
    being the layers of ``hi`` not in ``lo``."""

    def __init__(self, inst: Instance, family: CutFamily, modes: list[GroupMode],
                 types: DeviceTypes, deadline: Deadline) -> None:
        self.inst = inst
        self.family = family
        self.last = family.size - 1
        self.overlap = inst.cost_model.overlap
        self.alive = [float(x) for x in alive_bytes(inst, family.sets)]
        self.shapes = layer_shapes(inst)
        self.modes = modes
        self.deadline = deadline
        self.types = types
        self.type_of = {d: t for t, members in enumerate(types.members) for d in members}
        self._boundary: dict[tuple[tuple[int | None, ...], tuple[int | None, ...], int],
                             tuple[list[float], list[float]]] = {}
        self.usages = {gm: self.usage(gm) for gm in modes}
        best = [min(row) for row in inst.times]
        self.rest = [sum(best[v] for v in np.flatnonzero(~row)) for row in family.sets]
        speed = _speeds(inst.times, best)
        self.type_speed = [speed[m[0]] for m in types.members]
        self._free: dict[int, tuple[int, ...]] = {}

    def usage(self, g: GroupMode) -> tuple[tuple[tuple[int, int], ...], int]:
        """How many devices of each type ``g`` takes, and that as a state increment."""
        need: dict[int, int] = {}
        for d in g.members:
            need[self.type_of[d]] = need.get(self.type_of[d], 0) + 1
        return tuple(need.items()), sum(int(self.types.strides[t]) * k for t, k in need.items())

    def free(self, used: int) -> tuple[int, ...]:
        """Free devices per type in state ``used`` (counts of used devices in mixed radix)."""
        if used not in self._free:
            counts, strides = self.types.counts, self.types.strides
            self._free[used] = tuple(int(n - used // s % (n + 1))
                                     for n, s in zip(counts, strides, strict=True))
        return self._free[used]

    def fits(self, arc: Arc, used: int) -> bool:
        free = self.free(used)
        return all(free[t] >= k for t, k in arc.need)

    def rest_bound(self, pos: int, used: int) -> float:
        """A lower bound on the latency, and on the period, of the layers outside cut ``pos``
        on the devices still free in state ``used``: their best times over the free devices'
        summed speed (as in :func:`edgepart.cost.lower_bound`; split shares and replicas only
        add overheads)."""
        if self.rest[pos] == 0:
            return 0.0
        cap = sum(n * s for n, s in zip(self.free(used), self.type_speed, strict=True))
        return self.rest[pos] / cap if cap > 0 else math.inf

    def stage_layers(self, lo: int, hi: int) -> list[int]:
        """The layers of cut ``hi`` not in cut ``lo``, in topological order."""
        return np.flatnonzero(self.family.sets[hi] & ~self.family.sets[lo]).tolist()

    def arcs_from(self, lo: int, split: list[Arc], cap: float, latency: bool) -> list[Arc]:
        """Feasible arcs from cut ``lo``: those of ``split`` that start there and those of single
        devices and replica sets whose lower bound (:func:`_arc_lower` without the limits: the
        latency's slowest member, the period's harmonic sum of the members' compute) is at
        most ``cap`` (1e-9 above it, so that the cut sums here, rounded otherwise than the layer
        sums of the arcs, keep every arc the search would keep; the search skips the others, so
        they are never priced). Each priced once per group mode (a multiset of types)."""
        whole, member, cum, banned = self._whole_tables
        his = self.supers[lo]
        out = [arc for arc in split if arc.i == lo]
        if not whole or len(his) == 0:
            return out
        compute = np.maximum(cum[his] - cum[lo], 0.0)
        allowed = (banned[his] - banned[lo] == 0) @ member.T == member.sum(axis=1)
        keep = allowed & (_whole_lower(compute, member, latency) <= cap * (1 + 1e-9))
        for row in np.flatnonzero(keep.any(axis=1)):
            modes = [whole[k] for k in np.flatnonzero(keep[row])]
            out += self._whole_arcs(lo, int(his[row]), modes)
        return out

    @cached_property
    def supers(self) -> list[np.ndarray]:
        """Per cut, the cuts that strictly contain it (the ends of the arcs from it)."""
        out: list[list[int]] = [[] for _ in range(self.family.size)]
        for hi, los in enumerate(self.family.subs):
            for lo in los:
                out[int(lo)].append(hi)
        return [np.array(x, dtype=np.int64) for x in out]

    @cached_property
    def _whole_tables(self) -> tuple[list[GroupMode], np.ndarray, np.ndarray, np.ndarray]:
        """The single and replica group modes, their members (one row each), and per cut each
        device's compute of its layers and how many of them it may not run."""
        whole = [gm for gm in self.modes if gm.mode is not Mode.SPLIT]
        member = np.zeros((len(whole), len(self.inst.devices)))
        for k, gm in enumerate(whole):
            member[k, list(gm.members)] = 1.0
        times = np.array(self.inst.times)
        sets = self.family.sets.astype(float)
        return (whole, member, sets @ np.where(np.isfinite(times), times, 0.0),
                sets @ ~np.isfinite(times))

    def _whole_arcs(self, lo: int, hi: int, modes: list[GroupMode]) -> list[Arc]:
        """Arcs of single devices and replica sets on one cut step that fit memory: every
        member runs every layer of the stage (compute summed, parameters summed and working sets
        maxed in layer order, as the evaluator does)."""
        inst = self.inst
        layers = self.stage_layers(lo, hi)
        per_device = {d: sum(inst.times[v][d] for v in layers)
                      for d in {d for gm in modes for d in gm.members}}
        model = inst.model.layers
        held = (sum(model[v].param_bytes for v in layers)
                + max(model[v].work_bytes for v in layers))
        out = []
        for gm in modes:
            compute = tuple(per_device[d] for d in gm.members)
            if not all(math.isfinite(c) for c in compute):
                continue
            need = held + self._buffers(lo, hi, gm)
            if all(need <= tolerated(inst.devices[d].memory_bytes) for d in gm.members):
                out.append(self._arc(lo, hi, gm, compute))
        return out

    def _arc(self, lo: int, hi: int, gm: GroupMode, compute: tuple[float, ...],
             schemes: dict[int, Scheme] | None = None) -> Arc:
        need, code = self.usages[gm]
        return Arc(lo, hi, gm, compute, schemes or {}, need, code)

    def one_stage_arcs(self, split: list[Arc]) -> list[Arc]:
        """Every arc from no layer to every layer: the one-stage plans."""
        whole = [gm for gm in self.modes if gm.mode is not Mode.SPLIT]
        return ([a for a in split if a.i == 0 and a.j == self.last]
                + self._whole_arcs(0, self.last, whole))

    def split_arcs(self) -> list[Arc]:
        """The arcs of every split group mode."""
        return [arc for gm in self.modes if gm.mode is Mode.SPLIT for arc in self._split_arcs(gm)]

    @cached_property
    def split_paths(self) -> list[tuple[list[int], list[list[tuple[int, int]]]]]:
        """From every layer that may start a split stage, the longest path it may extend to
        (:func:`edgepart.cost.split_path_problem`) through layers with shapes that read their
        producer's (:func:`edgepart.cost.reads_producer`), and per prefix its cut steps: the
        validator's split stages are exactly these prefixes."""
        out = []
        for v in range(len(self.inst.model.layers)):
            if self.shapes[v] is not None and len(self.inst.model.pred[v]) <= 1:
                path = [v]
                while (nxt := self._next_on_path(path[-1])) is not None:
                    path.append(nxt)
                out.append((path, self._steps(path)))
        return out

    def _next_on_path(self, u: int) -> int | None:
        g = self.inst.model
        if len(g.succ[u]) != 1 or g.pred[g.succ[u][0]] != (u,):
            return None
        v = g.succ[u][0]
        shape, producer = self.shapes[v], self.shapes[u]
        ok = shape is not None and producer is not None and reads_producer(shape, producer)
        return v if ok else None

    def _steps(self, path: list[int]) -> list[list[tuple[int, int]]]:
        """For every prefix of ``path``, the cut steps (lo, hi) whose stage is that prefix."""
        sets = self.family.sets
        first = path[0]
        pred = list(self.inst.model.pred[first])
        starts = [lo for lo in range(self.family.size)
                  if not sets[lo, first] and sets[lo, pred].all()]
        index = self._cut_index
        out = []
        for end in range(len(path)):
            steps = []
            for lo in starts:
                row = sets[lo].copy()
                row[path[:end + 1]] = True
                hi = index.get(row.tobytes())
                if hi is not None:
                    steps.append((lo, hi))
            out.append(steps)
        return out

    @cached_property
    def _cut_index(self) -> dict[bytes, int]:
        return {row.tobytes(): k for k, row in enumerate(self.family.sets)}

    def _split_arcs(self, gm: GroupMode) -> list[Arc]:
        group = SplitGroup(self.inst, gm.members, self.shapes)
        out = []
        for path, steps in self.split_paths:
            self.deadline.check()
            ends = split_schemes(group, path, split_input_bytes(self.inst, path[0]))
            for end, (t, schemes) in enumerate(ends):
                if not all(math.isfinite(self.inst.times[path[end]][d]) for d in gm.members):
                    break
                layers = path[:end + 1]
                for lo, hi in steps[end]:
                    arc = self._fitting_arc(group, self._arc(lo, hi, gm, (t,), schemes), layers)
                    if arc is not None:
                        out.append(arc)
        return out

    def _fitting_arc(self, group: SplitGroup, arc: Arc, layers: list[int]) -> Arc | None:
        """The arc when its schemes fit every device's memory, else the fastest schemes of the
        stage among those that fit, by the scheme DP with memory in its labels
        (:func:`fitting_schemes`); ``None`` when none fit."""
        in_bytes = split_input_bytes(self.inst, layers[0])
        if self._surely_fits(arc, layers) or self._fits_split(arc, group.stage(
                layers, arc.schemes, in_bytes).member_memory_bytes):
            return arc
        caps = [self.inst.devices[d].memory_bytes for d in arc.g.members]
        caps[0] -= self._buffers(arc.i, arc.j, arc.g)
        found = fitting_schemes(group, layers, in_bytes, caps, self.deadline)
        return None if found is None else self._arc(arc.i, arc.j, arc.g, (found[0],), found[1])

    def _buffers(self, lo: int, hi: int, gm: GroupMode) -> float:
        """Receive plus send buffer bytes of the stage's ends (none toward its own device)."""
        inst = self.inst
        ends = list(gm.ends)
        nothing_in = lo == 0 and (inst.source is None or ends == [inst.source_index])
        nothing_out = hi == self.last and (inst.sink is None or ends == [inst.sink_index])
        return (0.0 if nothing_in else self.alive[lo]) + (0.0 if nothing_out else self.alive[hi])

    def _surely_fits(self, arc: Arc, layers: list[int]) -> bool:
        """A split stage's memory is at most a whole copy of every layer's weights plus, per
        layer, its whole working set and its whole input (what it may receive): if that fits,
        the exact figure does."""
        model = self.inst.model
        peak = max(model.layers[v].work_bytes + split_input_bytes(self.inst, v) for v in layers)
        need = (sum(model.layers[v].param_bytes for v in layers) + peak
                + self._buffers(arc.i, arc.j, arc.g))
        return all(need <= tolerated(self.inst.devices[d].memory_bytes) for d in arc.g.members)

    def _fits_split(self, arc: Arc, memory: Sequence[float]) -> bool:
        need = [memory[0] + self._buffers(arc.i, arc.j, arc.g), *memory[1:]]
        return all(need[k] <= tolerated(self.inst.devices[d].memory_bytes)
                   for k, d in enumerate(arc.g.members))

    # -- transfers ----------------------------------------------------------------------------

    def boundary(self, senders: Sequence[int | None], receivers: Sequence[int | None], cut: int
                 ) -> tuple[list[float], list[float]]:
        """Per-sender and per-receiver seconds of the message across ``cut`` (each end's worst
        partner) between two consecutive stages' ends, or a stage's and the source's or the
        sink's. Only the ends' types matter: the two stages hold different devices, so two ends
        of one type are one device only when the type has one device (the source and the sink
        are types of their own), and a link between two devices depends only on their types."""
        key = (tuple(None if d is None else self.type_of[d] for d in senders),
               tuple(None if d is None else self.type_of[d] for d in receivers), cut)
        if key not in self._boundary:
            t = [[self._type_transfer(a, b, cut) for b in key[1]] for a in key[0]]
            self._boundary[key] = ([max(row) for row in t],
                                   [max(row[k] for row in t) for k in range(len(key[1]))])
        return self._boundary[key]

    def _type_transfer(self, a: int | None, b: int | None, cut: int) -> float:
        if a is None or b is None:
            return 0.0
        first, second = self.types.members[a], self.types.members[b]
        if a == b and len(first) == 1:
            return 0.0
        return self.inst.transfer_time(first[0], second[1 if a == b else 0], self.alive[cut])

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


def _search(prob: _Problem, goal: _Goal) -> tuple[float, _Label | None, int]:
    """Forward DP over (cut, used devices per type, last group mode); labels as in the
    docstring. Returns the optimum, its label and how many arcs were priced.

    Pruning (exact): latency and period only grow along a path (a sum of non-negative terms; a
    max), so a label or an arc whose lower bound (:func:`_lower`: the label's latency or period,
    the last stage's period with free transfers, the remaining layers' bound
    :meth:`_Problem.rest_bound`; an arc's own compute) is no better than the best finished plan,
    or already breaks a limit, cannot lead to a better valid plan. The first incumbents are the
    one-stage plans, priced first; the arcs from a cut are priced when the search reaches it
    with a label left, and only those that could beat the incumbent then
    (:meth:`_Problem.arcs_from`)."""
    start = _Label(0.0, 0.0, (), None, None)
    best: tuple[float, _Label | None] = (math.inf, None)
    split = prob.split_arcs()
    for arc in prob.one_stage_arcs(split):
        recv, send = prob.into(prob.source_ends(), arc)
        label = _step(prob, start, None, arc, recv, send)
        value = _final(prob, goal, label, arc.g)
        if value < best[0]:
            best = (value, label)
    priced = 0
    # at[cut][(used devices, last group mode)] = labels
    at: list[dict[tuple[int, GroupMode | None], list[_Label]]] = [
        {} for _ in range(prob.family.size)]
    at[0][(0, None)] = [start]
    steps = 0
    for pos in range(prob.family.size):
        alive = [(used, last, [x for x in found if _lower(prob, goal, x, pos, used) < best[0]])
                 for (used, last), found in at[pos].items()]
        alive = [x for x in alive if x[2]]
        arcs = (prob.arcs_from(pos, split, best[0], goal.objective is Objective.LATENCY)
                if alive else [])
        priced += len(arcs)
        for used, last, labels in alive:
            prev = list(last.ends) if last is not None else prob.source_ends()
            for arc in arcs:
                steps += 1
                prob.deadline.check_every(steps, 2_000)
                if not prob.fits(arc, used) or _arc_lower(prob, goal, arc) >= best[0]:
                    continue
                recv, send_prev = prob.into(prev, arc)
                nused = used + arc.code
                for label in labels:
                    new = _step(prob, label, last, arc, recv, send_prev)
                    if _lower(prob, goal, new, arc.j, nused) >= best[0]:
                        continue
                    if arc.j == prob.last:
                        value = _final(prob, goal, new, arc.g)
                        if value < best[0]:
                            best = (value, new)
                        continue
                    bucket = at[arc.j].setdefault((nused, arc.g), [])
                    if not _dominated(goal, new, bucket):
                        bucket[:] = [o for o in bucket if not _dominated(goal, o, [new])] + [new]
        at[pos].clear()
    return best[0], best[1], priced


def _lower(prob: _Problem, goal: _Goal, label: _Label, pos: int, used: int) -> float:
    """A lower bound on every plan that extends ``label`` (at ``pos`` with ``used`` devices);
    ``inf`` when every such plan breaks a limit."""
    rest = prob.rest_bound(pos, used)
    last = prob.period(label.partial, [0.0] * len(label.partial)) if label.partial else 0.0
    return goal.value(label.lat + rest, max(label.per, last, rest))


def _whole_lower(compute: np.ndarray, member: np.ndarray, latency: bool) -> np.ndarray:
    """Per cut step (row of ``compute``: each device's compute of the stage) and group mode
    (row of ``member``: its devices), :func:`_arc_lower` of a single device or replica set
    without the limits: the slowest member's compute for the latency, 1 / sum 1 / compute
    (0 when a member's is 0) for the period."""
    if latency:
        return np.where(member[None] > 0, compute[:, None, :], 0.0).max(axis=2)
    positive = compute > 0
    rate = np.where(positive, 1.0 / np.where(positive, compute, 1.0), 0.0) @ member.T
    idle = (~positive).astype(float) @ member.T > 0
    return np.where(idle, 0.0, 1.0 / np.where(idle, 1.0, rate))


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
    sink_recv = 0.0 if sink is None else prob.boundary(last.ends, sink, prob.last)[1][0]
    return goal.value(label.lat + sink_recv,
                      max(label.per, prob.period(label.partial, out), sink_recv))




def _plan(prob: _Problem, label: _Label) -> Plan:
    """The DP's path as a plan: each stage on the first free devices of its group's types
    (:func:`_realise`)."""
    arcs: list[Arc] = []
    node: _Label | None = label
    while node is not None and node.arc is not None:
        arcs.append(node.arc)
        node = node.back
    used = [0] * prob.types.n_types
    stages = []
    for arc in reversed(arcs):
        stages.append(_stage(prob.inst, prob.stage_layers(arc.i, arc.j),
                             _realise(prob.types, arc.g, used), arc.schemes))
        for t, k in arc.need:
            used[t] += k
    return Plan(tuple(stages), prob.inst.name, "groups")


def _realise(types: DeviceTypes, g: GroupMode, used: Sequence[int]) -> GroupMode:
    """Group mode ``g`` (the first devices of its types) on the devices that follow the
    ``used[t]`` already taken of each type t: the lead the first taken of its type, the others
    in index order, as in :func:`group_modes`."""
    where = {d: (t, k) for t, members in enumerate(types.members) for k, d in enumerate(members)}

    def moved(d: int) -> int:
        t, k = where[d]
        return types.members[t][used[t] + k]

    if g.mode is Mode.SPLIT:
        return GroupMode(g.mode, (moved(g.members[0]), *sorted(map(moved, g.members[1:]))))
    return GroupMode(g.mode, tuple(sorted(map(moved, g.members))))


def _stage(inst: Instance, layers: Sequence[int], g: GroupMode, schemes: dict[int, Scheme]
           ) -> Stage:
    ids = [inst.model.layers[v].id for v in layers]
    devices = [inst.devices[d].id for d in g.members]
    if g.mode is Mode.SINGLE:
        return Stage(devices[0], tuple(ids))
    return Stage.group(devices, g.mode, ids,
                       {inst.model.layers[v].id: s for v, s in schemes.items()})


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
    stage = _stage(inst, range(len(inst.model.layers)), GroupMode(mode, one_group_members(inst)),
                   schemes or {})
    return Plan((stage,), inst.name, method)


# -- bounds and the fallback beyond the DP's size -------------------------------------------------


def hybrid_lower_bound(inst: Instance, objective: Objective | str) -> float:
    r"""A valid lower bound on the objective of every hybrid plan (any plan space): the
    *fractional work bound*.

    In every stage each layer :math:`v` is done in fractions :math:`x_{v,d} \ge 0` with
    :math:`\sum_d x_{v,d} = 1`: 1 on a single stage's device; the split share
    :math:`|R_{v,d}|/|R_v|` of a split stage (the regions partition the output,
    :mod:`edgepart.cost`); the request share :math:`q_r = (1/T_r)/\sum_{r'} (1/T_{r'})` of replica
    :math:`r`. Latency: a split stage's compute adds :math:`\max_d t(v, d) x_{v,d}` per layer,
    and :math:`\max_d t x \ge h_v = 1/\sum_d (1/t(v, d))` whenever :math:`\sum_d x = 1` (equal at
    :math:`x \propto 1/t`), a single device or any replica adds :math:`t(v, d) \ge h_v`; transfers
    and redistributions only add, so :math:`L \ge \sum_v h_v`. Period: device :math:`d` is busy
    :math:`W_d = \sum_v x_{v,d} t(v, d) \le P` per request (a split member's work is part of
    :math:`C_b \le T_b`; a replica's is :math:`q_r C_r \le q_r T_r = T_b`), so
    :math:`1 = \sum_d x_{v,d} \le P \sum_d 1/t(v, d)`, i.e. :math:`P \ge h_v` for every layer,
    and with :math:`w_v = \min_d t(v,d)` and :math:`s_d = \max_v w_v/t(v,d)` (as in
    :func:`edgepart.cost.lower_bound`) :math:`\sum_v w_v \le \sum_d s_d W_d \le P \sum_d s_d`.
    The best prices in the last inequality give :func:`edgepart.bounds.work_bound`, the LP
    optimum of these shares, which is used too. Memory, limits and groups sizes are ignored (a
    relaxation). A split layer whose output has no element costs nothing in
    :mod:`edgepart.cost`; if any shape has none, every layer with a shape counts 0 here (a weaker
    bound, still valid; the LP bound, which counts every layer, is then left out). Tight for a
    single layer split in proportion to speed with free transfers.
    """
    times = inst.times
    shapes = layer_shapes(inst)
    empty = any(s is not None and math.prod(s.out) == 0 for s in shapes)
    counted = [not (empty and shapes[v] is not None) for v in range(len(times))]
    shares = [_harmonic(row) if keep else 0.0 for row, keep in zip(times, counted, strict=True)]
    if Objective(objective) is Objective.LATENCY:
        return sum(shares)
    best = [min(row) if keep else 0.0 for row, keep in zip(times, counted, strict=True)]
    speed = _speeds(times, best)
    total = sum(best)
    work = total / sum(speed) if sum(speed) > 0 else (math.inf if total > 0 else 0.0)
    return max(max(shares, default=0.0), work, 0.0 if empty else work_bound(inst))


def _speeds(times: Sequence[Sequence[float]], best: Sequence[float]) -> list[float]:
    """Per device d, s_d = max_v best_v / t(v, d): best-time work done per second (so that
    best_v <= s_d t(v, d) for every layer d may run)."""
    return [max((best[v] / t for v, t in enumerate(col) if 0 < t < math.inf), default=0.0)
            for col in zip(*times, strict=True)]


def _harmonic(row: Sequence[float]) -> float:
    """1 / sum_d 1/t(v, d): the layer's time shared over every device in proportion to speed."""
    if any(t == 0 for t in row):
        return 0.0
    rate = sum(1.0 / t for t in row if t < math.inf)
    return 1.0 / rate if rate > 0 else math.inf


BASELINES = {"flexpie": Mode.SPLIT, "onedim": Mode.SPLIT, "grid2d": Mode.SPLIT,
             "dataparallel": Mode.REPLICATE}
"""The group baselines the fallback tries, and the mode each needs in the plan space."""


def _in_space(plan: Plan, options: SolveOptions) -> bool:
    """Every stage's mode is in the plan space and no group exceeds ``max_group``."""
    largest = options.max_group or math.inf
    return all(st.mode in MODES[options.plan_space] and len(st.members) <= largest
               for st in plan.stages)


def _best_known(inst: Instance, options: SolveOptions, deadline: Deadline, start: float,
                reason: str, timed_out: bool = False) -> SolveResult:
    """Where the DP does not apply: the best of the pipeline optimum (``auto``, within what is
    left of the time limit), the warm start and the group baselines of the plan space, with
    :func:`hybrid_lower_bound`, or the pipeline solver's own bound where it holds for the plan
    space (:func:`_pipeline_bound_holds`)."""
    pipeline, found = _candidates(inst, options, deadline)
    plan = best_plan(inst, [p for p in found.values() if p is not None and _in_space(p, options)],
                     options)
    bound, bound_name = hybrid_lower_bound(inst, options.objective), "the fractional work bound"
    pipeline_bound = _pipeline_bound_holds(inst, options)
    if pipeline_bound and pipeline.bound_s > bound:
        bound, bound_name = pipeline.bound_s, "the pipeline solver's bound"
    extra: dict[str, Any] = {"plan_space": options.plan_space.value, "fallback": {
        "why": reason, "pipeline_status": pipeline.status.value,
        "plan_from": next((k for k, p in found.items() if p is plan), None)}}
    wall = time.perf_counter() - start
    if plan is None and pipeline_bound and pipeline.status is SolutionStatus.INFEASIBLE:
        return finish(inst, None, method="groups", options=options, extra=extra,
                      termination=Termination.INFEASIBLE, wall_time_s=wall,
                      message=pipeline.message)
    message = (f"the exact DP does not apply ({reason}): best of the pipeline solver, the warm "
               f"start and the group baselines, with {bound_name}")
    timed_out = (timed_out or deadline.left() <= 0
                 or pipeline.termination is Termination.TIME_LIMIT)
    termination = (Termination.OPTIMAL  # the pipeline proof holds and no candidate is worse
                   if pipeline_bound and pipeline.termination is Termination.OPTIMAL
                   else Termination.TIME_LIMIT if timed_out else Termination.FINISHED)
    return finish(inst, plan, method="groups", options=options, termination=termination,
                  bound=bound, wall_time_s=wall, exact=True, message=message, extra=extra)


def _candidates(inst: Instance, options: SolveOptions, deadline: Deadline
                ) -> tuple[SolveResult, dict[str, Plan | None]]:
    """The pipeline solver's result (warm-started by a warm start without groups) and every
    candidate plan by where it comes from."""
    warm = options.warm_start
    pipeline_options = replace(options, plan_space=PlanSpace.PIPELINE, warm_start=(
        warm if warm is not None and not any(st.is_group for st in warm.stages) else None))
    pipeline = get_method("auto")(inst, pipeline_options.with_time_left(deadline))
    found = {"pipeline": pipeline.plan, "warm_start": warm}
    for name, mode in BASELINES.items():
        if mode in MODES[options.plan_space]:
            found[name] = get_method(name, options.plan_space)(inst, options).plan
    return pipeline, found


def _pipeline_bound_holds(inst: Instance, options: SolveOptions) -> bool:
    """Whether the pipeline solver's bound (and a proof of infeasibility) holds for the plan
    space: with ``--plan-space pipeline``; under direct transfers (the validator refuses every
    group, so the plan space is the pipeline plans); for the latency when nothing can be split
    (:func:`_pipeline_latency_is_hybrid`)."""
    return (options.plan_space is PlanSpace.PIPELINE
            or inst.cost_model.transfer is not Transfer.RELAY
            or _pipeline_latency_is_hybrid(inst, options))


# -- the method ---------------------------------------------------------------------------------


def _pipeline_latency_is_hybrid(inst: Instance, options: SolveOptions) -> bool:
    r"""Whether the least latency over the plan space is the pipeline optimum's: so when no stage
    can be split (the plan space has no split, or no layer has a shape) and the period is free.

    Proof: put each replicated stage on one of its replicas :math:`c_b` instead. Its compute is
    that replica's; its receive :math:`\tau(c_{b-1}, c_b)` is at most the replica's receive in the
    group plan (the worst over the previous stage's ends), the sink's likewise; so each latency
    term :math:`\mathrm{in} + C` is at most the group's slowest replica's, and every device holds
    what it held (or less: a message to itself is not buffered). The pipeline plan is valid
    and no slower, so the pipeline solver's bound holds for the latency. Not so under
    ``--max-period``: the pipeline plan may break it (replicas divide the period).
    """
    splittable = Mode.SPLIT in MODES[options.plan_space] and any(
        s is not None for s in layer_shapes(inst))
    return (options.objective is Objective.LATENCY and options.max_period is None
            and not splittable)


def _modes(inst: Instance, options: SolveOptions, types: DeviceTypes) -> list[GroupMode]:
    """The plan space's group modes; none split when no layer has a shape (none could be)."""
    splittable = any(s is not None for s in layer_shapes(inst))
    return [gm for gm in group_modes(inst, options.plan_space, options.max_group, types)
            if splittable or gm.mode is not Mode.SPLIT]


def _size_refusal(inst: Instance, options: SolveOptions, types: DeviceTypes
                  ) -> tuple[str, list[GroupMode], CutFamily | None]:
    """Why the DP would not fit, or its group modes and the cuts it would use (the states are
    counted first: the group modes of many distinct devices are too many to list)."""
    states = types.n_states
    if states > MAX_STATES:
        return (f"tracks how many devices of each type are used: at most {MAX_STATES} such "
                f"states, got {states} ({types.n_types} device types)"), [], None
    modes = _modes(inst, options, types)
    if len(modes) > MAX_GROUP_MODES:
        return (f"{len(modes)} group modes (limit {MAX_GROUP_MODES}): lower --max-group or use "
                "fewer devices"), modes, None
    family = prefix_family(inst) if inst.model.is_chain else ideal_family(inst)
    if family is None:
        return f"more than {MAX_IDEALS} ideals", modes, None
    work = family.pairs * len(modes)
    if work > MAX_WORK:
        return (f"~{work:.2g} (stage, group mode) arcs (limit {MAX_WORK:.2g})"), modes, None
    return "", modes, family


@register("groups")
def solve_groups(inst: Instance, options: SolveOptions) -> SolveResult:
    """The optimum over the plan space (``options.plan_space``), proven by the DP where it fits,
    else the best known plan with a lower bound (:func:`_best_known`)."""
    start = time.perf_counter()
    deadline = Deadline.after(options.time_limit)
    if inst.cost_model.transfer is not Transfer.RELAY:
        return _best_known(inst, options, deadline, start,
                           "device groups need relay transfers: the plan space is the "
                           "pipeline plans")
    if _pipeline_latency_is_hybrid(inst, options):
        return _best_known(inst, options, deadline, start,
                           "nothing can be split and the period is free: the least latency is "
                           "the pipeline optimum")
    types = device_types(inst)
    reason, modes, family = _size_refusal(inst, options, types)
    if family is None:
        return _best_known(inst, options, deadline, start, reason)
    dp_deadline = Deadline.after(DP_SECONDS if options.time_limit is None
                                 else options.time_limit / 2)
    try:
        prob = _Problem(inst, family, modes, types, dp_deadline)
        goal = _Goal(options.objective,
                     math.inf if options.max_latency is None else options.max_latency,
                     math.inf if options.max_period is None else options.max_period)
        bound, label, priced = _search(prob, goal)
    except OutOfTime:
        return _best_known(inst, options, deadline, start,
                           "time limit before the DP finished", timed_out=True)
    wall = time.perf_counter() - start
    extra: dict[str, Any] = {"plan_space": options.plan_space.value, "group_modes": len(modes),
                             "device_types": types.n_types,
                             "cuts": family.size,
                             "arcs": priced}
    if label is None:
        return finish(inst, None, method="groups", options=options,
                      termination=Termination.INFEASIBLE, wall_time_s=wall, extra=extra,
                      message="no plan of this plan space fits memory, device classes and "
                              "limits")
    return finish(inst, _plan(prob, label), method="groups", options=options,
                  termination=Termination.OPTIMAL, bound=bound, wall_time_s=wall, exact=True,
                  extra=extra)
