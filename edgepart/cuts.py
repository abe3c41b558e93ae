r"""Cuts and what they cost: the relay cost model over families of predecessor-closed layer sets.

A plan is a chain of *cuts* :math:`\emptyset = I_0 \subsetneq I_1 \subsetneq \dots
\subsetneq I_k = V` (each closed under predecessors) with stage :math:`b` running
:math:`I_{b+1} \setminus I_b` on device :math:`d_b`. In relay mode (:mod:`edgepart.cost`) the
boundary after stage :math:`b` carries the bytes :math:`B(I_{b+1})` of every tensor produced inside
the cut and consumed outside it, so a stage costs what its own layer set, its device and its
neighbours' devices say. This module holds the pieces every cut-based method reads: the families
(prefixes of the layer order, or every ideal), devices merged into interchangeable *types*, and
:class:`CutCosts`, the arrays of stage compute, memory feasibility and transfer times. The DPs
(:mod:`edgepart.solvers.dp`), the path formulation (:mod:`edgepart.formulations.paths`) and the
range heuristics use them; none of it calls a solver. Bounds live here too:
:func:`first_stages_bound` (the cheapest first two stages) and :func:`period_search`, threshold
questions on the period answered by one sweep over the ideal lattice (the MILP backends' driver
asks them before it calls the solver on stage slots), with two variants of that sweep for where
the lattice is too large: :func:`range_search` over the prefixes of one order (a restriction:
plans) and :func:`relaxed_search` with the device counts relaxed to priced counters (a
relaxation: bounds).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from edgepart.cost import REL_TOL, evaluate, validate_plan
from edgepart.formulations.model import NO_DEADLINE, Deadline, OutOfTime
from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = [
    "LATTICE_CELLS",
    "LATTICE_STATES",
    "MAX_IDEALS",
    "RELAXED_IDEALS",
    "SUM_TOL",
    "CutCosts",
    "CutFamily",
    "DeviceTypes",
    "PeriodSearch",
    "alive_bytes",
    "colocation_cut_ok",
    "first_stages_bound",
    "ideal_family",
    "low_alive_order",
    "path_plan",
    "period_search",
    "prefix_family",
    "range_search",
    "relaxed_search",
]

MAX_IDEALS = 5_000
"""Most ideals :func:`ideal_family` enumerates by default (Tarnawski et al. stop at 60,000 with
one state each; the DP carries S x T device states per ideal)."""


def alive_bytes(inst: Instance, sets: np.ndarray) -> np.ndarray:
    r"""Relay bytes across the boundary of each predecessor-closed layer set.

    ``sets`` is an (M, n) boolean matrix; row :math:`I` is a set of layers closed under
    predecessors. A tensor of layer :math:`u` is alive across it when :math:`u \in I` and some
    consumer is outside :math:`I` (a model output counts as consumed by the sink, when there is
    one); the request input is alive while some entry layer is outside :math:`I` (when there is
    a source). This is :mod:`edgepart.cost`'s boundary :math:`B_b` with :math:`I` = stages
    :math:`\le b`.
    """
    g = inst.model
    out = np.zeros(sets.shape[0])
    for u, succ in enumerate(g.succ):
        if succ:
            leaves = ~sets[:, list(succ)].all(axis=1)
        elif inst.sink is not None:
            leaves = np.ones(sets.shape[0], dtype=bool)
        else:
            continue
        out += g.tensor_bytes[u] * (sets[:, u] & leaves)
    if inst.source is not None:
        out += g.input_bytes * ~sets[:, list(g.entries)].all(axis=1)
    return out


def low_alive_order(inst: Instance) -> tuple[int, ...]:
    r"""A topological order whose prefixes keep few bytes alive (:func:`alive_bytes`).

    Greedy, as register-pressure schedulers order instructions: next comes the ready layer
    whose addition grows the boundary least (its tensor, if something outside will read it,
    minus the tensors it is the last reader of, minus the request input when it is the last
    entry), ties to the lower index. Range plans of this order can cut where the given order
    cannot: on NASNet-A the given order finishes a cell before it starts the next one, so its
    cuts inside a 28 x 28 stack carry seven feature maps or more (at least 8.2 ms on 1 Gbit/s);
    this order runs the next cell's input convolutions first, and cuts carrying three exist in
    every cell. A heuristic order: nothing exact depends on it.
    """
    lattice = _Lattice.of(inst)
    ideal, ready, order = 0, lattice.starts, []
    while ready:  # the growth is _alive's update of the bytes, from 0
        v = min(_members(ready), key=lambda u: (lattice._alive(0.0, u, ideal | 1 << u), u))
        ideal |= 1 << v
        ready = (ready ^ 1 << v) | lattice._ready(v, ideal)
        order.append(v)
    return tuple(order)


def colocation_cut_ok(inst: Instance) -> np.ndarray:
    """``ok[j]`` (j = 0..n): cutting the layer order before position j splits no colocate group."""
    g = inst.model
    ok = np.ones(len(g.layers) + 1, dtype=bool)
    for group in g.colocate:
        pos = [g.index[lid] for lid in group]
        ok[min(pos) + 1: max(pos) + 1] = False
    return ok


def _default_key(inst: Instance, d: int) -> tuple[Any, ...]:
    dev = inst.devices[d]
    return (dev.cls, dev.memory_bytes, dev.flops_per_s)


@dataclass(frozen=True)
class DeviceTypes:
    """Devices grouped into interchangeable types; ``members[t]`` lists device indices."""

    members: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, inst: Instance, devices: Sequence[int],
           key: Callable[[Instance, int], tuple[Any, ...]] = _default_key,
           refine: bool = True) -> DeviceTypes:
        """Group ``devices`` by ``key``; the source and sink are always alone. With ``refine``,
        any group whose members' links (to each other, other devices, source, sink) differ is
        split into single devices, so that swapping two members is a symmetry of the instance."""
        ends = {e for e in (inst.source_index, inst.sink_index) if e is not None}
        groups: dict[tuple[Any, ...], list[int]] = {}
        for d in devices:
            groups.setdefault(("end", d) if d in ends else key(inst, d), []).append(d)
        members = [tuple(g) for g in groups.values()]
        while refine:
            split = _asymmetric_groups(inst, members, ends)
            if not split:
                break
            members = [m for g, grp in enumerate(members)
                       for m in ([(d,) for d in grp] if g in split else [grp])]
        return cls(tuple(members))

    @cached_property
    def counts(self) -> np.ndarray:
        return np.array([len(m) for m in self.members])

    @cached_property
    def strides(self) -> np.ndarray:
        return np.concatenate([[1], np.cumprod(self.counts + 1)[:-1]]).astype(np.int64)

    @property
    def n_types(self) -> int:
        return len(self.members)

    @property
    def n_states(self) -> int:
        """Multisets of used devices: a Python int, exact (a numpy product wraps past 2**63, and
        100 single-device types made it 0). Callers compare it with their work limits before
        they build anything of this size."""
        return math.prod(int(c) + 1 for c in self.counts)

    @cached_property
    def addable(self) -> tuple[np.ndarray, ...]:
        """Per type t, the states that still have a device of type t free."""
        s = np.arange(self.n_states)
        return tuple(np.flatnonzero((s // self.strides[t]) % (self.counts[t] + 1) < self.counts[t])
                     for t in range(self.n_types))

    def contains(self, t: int, device: int | None) -> bool:
        return device is not None and device in self.members[t]


def _asymmetric_groups(inst: Instance, members: list[tuple[int, ...]], ends: set[int]) -> set[int]:
    """Groups (indices) whose links are not a function of the pair of groups."""
    gid = {d: g for g, grp in enumerate(members) for d in grp}
    for e in ends - gid.keys():
        gid[e] = -1 - e  # an end that is not a candidate device is a group of its own
    seen: dict[tuple[int, int], Any] = {}
    bad: set[int] = set()
    for x in gid:
        for y in gid:
            if x == y:
                continue
            pair, link = (gid[x], gid[y]), inst.link(x, y)
            if seen.setdefault(pair, link) != link:
                bad.update(g for g in pair if g >= 0 and len(members[g]) > 1)
    return bad


@dataclass(frozen=True)
class CutFamily:
    """Cuts (predecessor-closed layer sets) sorted by size, from empty (0) to everything (M-1).

    ``subs[I]`` holds the cuts strictly inside cut ``I``: each pair ``J < I`` is a possible stage
    ``sets[I] & ~sets[J]``.
    """

    sets: np.ndarray
    subs: tuple[np.ndarray, ...]

    @property
    def size(self) -> int:
        return int(self.sets.shape[0])

    @cached_property
    def pairs(self) -> int:
        return int(sum(len(s) for s in self.subs))


def prefix_family(inst: Instance, positions: Sequence[int] | None = None) -> CutFamily:
    """Prefixes of the layer order at ``positions`` (default: every position that splits no
    colocate group); 0 and n are always included."""
    n = len(inst.model.layers)
    ok = colocation_cut_ok(inst)
    pos = sorted({0, n, *(j for j in (range(n + 1) if positions is None else positions) if ok[j])})
    sets = np.arange(n)[None, :] < np.array(pos)[:, None]
    return CutFamily(sets, tuple(np.arange(i) for i in range(len(pos))))


def ideal_family(inst: Instance, max_ideals: int = MAX_IDEALS) -> CutFamily | None:
    """Every ideal of the layer DAG that splits no colocate group, or ``None`` when there are
    more than ``max_ideals`` ideals (counted before the colocation filter)."""
    g = inst.model
    n = len(g.layers)
    pred = [sum(1 << u for u in p) for p in g.pred]
    seen = {0}
    level = [0]
    while level:
        nxt = []
        for ideal in level:
            for v in range(n):
                bit = 1 << v
                if not ideal & bit and pred[v] & ~ideal == 0 and ideal | bit not in seen:
                    seen.add(ideal | bit)
                    nxt.append(ideal | bit)
            if len(seen) > max_ideals:
                return None
        level = nxt
    groups = [sum(1 << g.index[lid] for lid in grp) for grp in g.colocate]
    ideals = sorted((i for i in seen if all(i & m in (0, m) for m in groups)), key=int.bit_count)
    nbytes = (n + 7) // 8
    sets = np.array([np.unpackbits(np.frombuffer(i.to_bytes(nbytes, "little"), np.uint8),
                                   bitorder="little")[:n] for i in ideals], dtype=bool)
    packed = np.packbits(sets, axis=1)
    subs = tuple(np.flatnonzero(~(packed[:i] & ~packed[i]).any(axis=1)) for i in range(len(ideals)))
    return CutFamily(sets, subs)


@dataclass(frozen=True)
class CutCosts:
    """Everything one DP pass reads. Build it with :meth:`of`; fields are arrays over cuts (M),
    types (T) or layers (n). ``comm_bytes`` are the bytes of the message across a cut,
    ``buffer_bytes`` what the stages on both sides hold for it (equal, except for PipeEdge's own
    model)."""

    family: CutFamily
    types: DeviceTypes
    comm_bytes: np.ndarray
    buffer_bytes: np.ndarray
    lat: np.ndarray
    inv_bw: np.ndarray
    src: np.ndarray
    snk: np.ndarray
    cum_time: np.ndarray
    cum_bad: np.ndarray
    params: np.ndarray
    work: np.ndarray
    capacity: np.ndarray
    recv_first: np.ndarray
    send_last: np.ndarray

    @classmethod
    def of(cls, inst: Instance, family: CutFamily, types: DeviceTypes) -> CutCosts:
        """The relay cost model of ``inst`` on ``family`` with devices grouped by ``types``."""
        reps = [m[0] for m in types.members]
        times = np.array(inst.times, dtype=float).reshape(len(inst.model.layers), -1)[:, reps]
        runs = np.isfinite(times)
        sets = family.sets.astype(float)
        alive = alive_bytes(inst, family.sets)
        lat, inv_bw = _type_links(inst, types)
        return cls(
            family=family, types=types, comm_bytes=alive, buffer_bytes=alive, lat=lat,
            inv_bw=inv_bw,
            src=_end_times(inst, types, inst.source_index, alive[0], outgoing=True),
            snk=_end_times(inst, types, inst.sink_index, alive[-1], outgoing=False),
            cum_time=sets @ np.where(runs, times, 0.0), cum_bad=sets @ (~runs).astype(float),
            params=sets @ np.array([x.param_bytes for x in inst.model.layers]),
            work=np.array([x.work_bytes for x in inst.model.layers]),
            capacity=np.array([inst.devices[d].memory_bytes for d in reps]),
            recv_first=np.array([0.0 if types.contains(t, inst.source_index) else alive[0]
                                 for t in range(types.n_types)]),
            send_last=np.array([0.0 if types.contains(t, inst.sink_index) else alive[-1]
                                for t in range(types.n_types)]))

    def stage(self, i: int, js: np.ndarray) -> np.ndarray:
        """(len(js), T): compute seconds of stage ``sets[i] - sets[j]`` on each type; ``inf``
        where a layer may not run there or the stage (with its buffers) does not fit."""
        last = self.family.size - 1
        comp = self.cum_time[i] - self.cum_time[js]
        bad = self.cum_bad[i] - self.cum_bad[js] > 0.5
        mem = (self.params[i] - self.params[js] + self._max_work(i, js))[:, None] + (
            self.send_last if i == last else self.buffer_bytes[i])
        mem = mem + np.where((js == 0)[:, None], self.recv_first[None, :],
                             self.buffer_bytes[js][:, None])
        return np.where(bad | (mem > self.capacity * (1 + REL_TOL)), np.inf, comp)

    def _max_work(self, i: int, js: np.ndarray) -> np.ndarray:
        if not self.work.any():
            return np.zeros(len(js))
        inside = self.family.sets[i] & ~self.family.sets[js]
        return np.where(inside, self.work, 0.0).max(axis=1)

    def cross(self, i: int) -> np.ndarray:
        """(T, T): seconds of the message across cut ``i`` from a stage of type u to one of v."""
        return self.lat + self.comm_bytes[i] * self.inv_bw


def _type_links(inst: Instance, types: DeviceTypes) -> tuple[np.ndarray, np.ndarray]:
    """Latency and 1/bandwidth between types (within a type: between two of its devices)."""
    nt = types.n_types
    lat, inv_bw = np.full((nt, nt), np.inf), np.zeros((nt, nt))
    for u, mu in enumerate(types.members):
        for v, mv in enumerate(types.members):
            pair = (mu[0], mv[0]) if u != v else (mu[:2] if len(mu) > 1 else None)
            if pair is not None:
                link = inst.link(*pair)
                lat[u, v], inv_bw[u, v] = link.latency_s, 1.0 / link.bandwidth_bytes_per_s
    return lat, inv_bw


def _end_times(inst: Instance, types: DeviceTypes, end: int | None, nbytes: float,
               outgoing: bool) -> np.ndarray:
    """Seconds between the source (sink) and a first (last) stage of each type."""
    reps = [m[0] for m in types.members]
    return np.array([inst.transfer_time(end, d, nbytes) if outgoing
                     else inst.transfer_time(d, end, nbytes) for d in reps])


def path_plan(inst: Instance, prob: CutCosts, path: Sequence[tuple[int, int, int]],
              method: str = "") -> Plan:
    """The plan of a DP path: stage b runs ``sets[I] - sets[J]`` on the next free device of its
    type."""
    stage_of = np.zeros(len(inst.model.layers), dtype=int)
    free = [list(m) for m in prob.types.members]
    devices = []
    for b, (j, i, t) in enumerate(path):
        stage_of[prob.family.sets[i] & ~prob.family.sets[j]] = b
        devices.append(free[t].pop(0))
    return Plan.from_assignment(inst, stage_of.tolist(), devices, method)



FIRST_STAGE_SETS = 50_000
"""Most ideals :func:`first_stages_bound` visits in all; past them it claims less (see there)."""


def first_stages_bound(inst: Instance, cap: float, deadline: Deadline = NO_DEADLINE,
                       max_sets: int = FIRST_STAGE_SETS) -> float:
    r"""A lower bound on the period of every relay plan of single-device stages, from its first
    two stages (or ``cap`` when no plan can beat ``cap``).

    Stage 0 of a plan runs an ideal :math:`I_1 \ne \emptyset` on a device :math:`d_0`, stage 1
    (if :math:`I_1 \ne V`) the layers :math:`I_2 \setminus I_1` on a device
    :math:`d_1 \ne d_0`. The period is at least each of: the source's transfer
    :math:`\tau_{s d_0}(\beta_{in})`, the compute :math:`c_{d_0}(I_1)`, the boundary
    :math:`\tau_{d_0 d_1}(B(I_1))`, the compute :math:`c_{d_1}(I_2 \setminus I_1)` and what
    stage 1 sends: :math:`\min_{e \notin \{d_0, d_1\}} \tau_{d_1 e}(B(I_2))` when
    :math:`I_2 \ne V`, else the sink's transfer (a one-stage plan: the sink's transfer from
    :math:`d_0`). (With overlap the period is the largest stage term, without it a sum of them.)
    So the least, over every such choice, of the largest of these terms bounds every plan.

    Memory, device classes (beyond infinite times) and colocation are ignored: the minimum runs
    over more choices, so it stays a lower bound. Ideals are grown one layer at a time
    (breadth first, each once); a set whose stage compute already reaches the least value found
    so far is not grown, since compute only grows with the set, and nothing is grown once the
    stage's fixed terms reach it. After ``max_sets`` ideals in all,
    a first stage is no longer followed into the second (its value is then
    :math:`\max(\tau_{s d_0}, c_{d_0}(I_1), \min_{e \ne d_0} \tau_{d_0 e}(B(I_1)))`, a
    lower bound of every continuation), and a first stage not fully enumerated claims only
    :math:`\max(\tau_{s d_0}, \min_v t(v, d_0))`. Relay transfers only: on direct transfers
    a stage's sends are not :math:`B(I)`.
    """
    search = _FirstStages(inst, _Lattice.of(inst), cap, _Budget(max_sets, deadline))
    for d in search.distinct(range(len(inst.devices)), None):
        search.first(d)
    return search.best


class _Exhausted(Exception):
    """The enumeration's budget of ideals is spent."""


@dataclass
class _Budget:
    left: int
    deadline: Deadline
    spent: int = 0

    def spend(self, count: int = 1) -> None:
        if count == 1:
            self.deadline.check_every(self.spent)
        else:
            self.deadline.check()
        self.spent += count
        if self.spent > self.left:
            raise _Exhausted


@dataclass(frozen=True)
class _Lattice:
    """The layer DAG as bit masks, for growing ideals one layer at a time; with an ``order``,
    only the prefixes of that topological order (a chain of sets: a restriction)."""

    inst: Instance
    pred: tuple[int, ...]
    """Per layer, the layers that must come first (its predecessors, or the one before it in
    the order)."""
    unlocks: tuple[tuple[int, ...], ...]
    """Per layer, those that may become addable once it is added."""
    starts: int
    """The layers addable to the empty set."""
    entries: int
    """The layers that read the request input (for the bytes alive, whatever the order)."""
    full: int
    kept: tuple[bool, ...]
    """A layer's tensor is alive across a boundary while it has a consumer outside (or goes
    to the sink)."""

    @classmethod
    def of(cls, inst: Instance, order: Sequence[int] | None = None) -> _Lattice:
        g = inst.model
        entries = sum(1 << e for e in g.entries)
        kept = tuple(bool(s) or inst.sink is not None for s in g.succ)
        full = (1 << len(g.layers)) - 1
        if order is None:
            return cls(inst, tuple(sum(1 << u for u in p) for p in g.pred), g.succ, entries,
                       entries, full, kept)
        pred = [0] * len(order)
        unlocks: list[tuple[int, ...]] = [()] * len(order)
        for before, after in itertools.pairwise(order):
            pred[after], unlocks[before] = 1 << before, (after,)
        return cls(inst, tuple(pred), tuple(unlocks), 1 << order[0] if order else 0, entries,
                   full, kept)

    def count(self, limit: int, deadline: Deadline) -> int:
        """The number of ideals of the DAG, counted breadth first; ``limit + 1`` once there are
        more than ``limit``."""
        level, seen = {0: self.starts}, 1
        while level:
            nxt: dict[int, int] = {}
            for ideal, ready in level.items():
                rest = ready
                while rest:
                    bit = rest & -rest
                    rest ^= bit
                    high = ideal | bit
                    if high not in nxt:
                        nxt[high] = (ready ^ bit) | self._ready(bit.bit_length() - 1, high)
            seen += len(nxt)
            deadline.check()
            if seen > limit:
                return limit + 1
            level = nxt
        return seen

    def start_bytes(self) -> float:
        return self.inst.model.input_bytes if self.inst.source is not None else 0.0

    def grow(self, ideal: int, nbytes: float, ready: int, times: Sequence[float],
             limit: Callable[[], float], budget: _Budget
             ) -> Iterator[tuple[int, float, float, int]]:
        """Every ideal above ``ideal`` (alive bytes ``nbytes``, addable layers ``ready``) whose
        added layers take less than ``limit()`` on ``times`` when reached: (ideal, that
        compute, its alive bytes, its addable layers)."""
        level = {ideal: (0.0, nbytes, ready)}
        while level:
            grown: dict[int, tuple[float, float, int]] = {}
            for low, (compute, alive, free) in level.items():
                budget.spend()
                rest = free
                while rest:
                    bit = rest & -rest
                    rest ^= bit
                    v, high = bit.bit_length() - 1, low | bit
                    if high in grown or not compute + times[v] < limit():
                        continue
                    grown[high] = (compute + times[v], self._alive(alive, v, high),
                                   (free ^ bit) | self._ready(v, high))
                    yield high, *grown[high]
            level = grown

    def _alive(self, nbytes: float, v: int, ideal: int) -> float:
        g = self.inst.model
        nbytes += g.tensor_bytes[v] if self.kept[v] else 0.0
        nbytes -= sum(g.tensor_bytes[u] for u in g.pred[v]
                      if all(ideal >> w & 1 for w in g.succ[u]))
        if self.inst.source is not None and self.entries >> v & 1 and not self.entries & ~ideal:
            nbytes -= g.input_bytes
        return nbytes

    def _ready(self, v: int, ideal: int) -> int:
        return sum(1 << w for w in self.unlocks[v] if not self.pred[w] & ~ideal)


@dataclass
class _FirstStages:
    """The search of :func:`first_stages_bound`; ``best`` is the least value found so far."""

    inst: Instance
    lattice: _Lattice
    best: float
    budget: _Budget
    deep: bool = True
    """Whether first stages are still followed into the second."""
    seconds: dict[int, list[int]] = field(default_factory=dict)
    """:meth:`distinct` devices after each first device."""

    def times(self, d: int) -> list[float]:
        return [row[d] for row in self.inst.times]

    def send(self, d: int, nbytes: float, ideal: int, away: tuple[int | None, ...]) -> float:
        """Least time for device d to send the boundary of ``ideal`` to a device not in
        ``away`` (to the sink if ``ideal`` is every layer)."""
        inst = self.inst
        if ideal == self.lattice.full:
            return inst.transfer_time(d, inst.sink_index, nbytes)
        return min((inst.links[d][e].time(nbytes) for e in range(len(inst.devices))
                    if e != d and e not in away), default=math.inf)

    def distinct(self, devices: Iterable[int], before: int | None) -> list[int]:
        """One device of each kind that the search cannot tell apart (same times and links;
        the source and the sink are each of a kind of their own)."""
        inst, seen, out = self.inst, set(), []
        ends = (inst.source_index, inst.sink_index)
        for d in devices:
            key = (tuple(self.times(d)), tuple(inst.links[d]), tuple(row[d] for row in inst.links),
                   d if d in ends else None)
            if d != before and key not in seen:
                seen.add(key)
                out.append(d)
        return out

    def first(self, d0: int) -> None:
        lat = self.lattice
        src = self.inst.transfer_time(self.inst.source_index, d0, self.inst.model.input_bytes)
        if src >= self.best:
            return
        try:
            for ideal, compute, nbytes, ready in lat.grow(
                    0, lat.start_bytes(), lat.starts, self.times(d0),
                    lambda: self.best if src < self.best else -math.inf, self.budget):
                self.follow(d0, max(src, compute), ideal, nbytes, ready)
        except _Exhausted:
            self.deep = False
            self.best = min(self.best, max(src, min(self.times(d0))))

    def follow(self, d0: int, value: float, ideal: int, nbytes: float, ready: int) -> None:
        """Plans whose first stage is ``ideal`` on d0 (stage value so far ``value``)."""
        one = max(value, self.send(d0, nbytes, ideal, ()))
        if one >= self.best or ideal == self.lattice.full or not self.deep:
            self.best = min(self.best, one)
            return
        if d0 not in self.seconds:
            self.seconds[d0] = self.distinct(range(len(self.inst.devices)), d0)
        for d1 in self.seconds[d0]:
            self.second(d0, d1, max(value, self.inst.transfer_time(d0, d1, nbytes)), ideal,
                        nbytes, ready)

    def second(self, d0: int, d1: int, value: float, first: int, nbytes: float,
               ready: int) -> None:
        if value >= self.best:
            return
        try:
            for ideal, compute, alive, _ in self.lattice.grow(
                    first, nbytes, ready, self.times(d1),
                    lambda: self.best if value < self.best else -math.inf, self.budget):
                self.best = min(self.best, max(value, compute, self.send(d1, alive, ideal, (d0,))))
        except _Exhausted:
            self.deep = False
            self.best = min(self.best, value)


SUM_TOL = 1e-10
"""Relative slack of :func:`period_search`'s comparisons with the threshold: the sweep adds a
stage's layer times in another order than :mod:`edgepart.cost` (at most ``n`` roundings of
``2**-53`` each, far below this), so a term the evaluator puts at the threshold is kept, and a
claimed bound is lowered by the same factor; both stay far inside ``OPTIMALITY_TOL``."""

LATTICE_CELLS = 64_000_000
"""Most states (ideals times used multisets times types) one question of :func:`period_search`
visits before it gives up (no claim): every level is kept for the walk back, about 16 bytes a
state, so about 1 GB at most (Inception-v3 on 8 devices: 19 million a question; the 1,000-layer
BERT of ``bench/graphs.py`` on 32 devices: 56 million, 1.1 GB peak for the whole process)."""


LATTICE_STATES = 100_000
"""Most states per ideal (used multisets times types) :func:`period_search` accepts: devices
that are all different (20 wireless nodes: a million multisets) make even one ideal too big."""


NEAR = 0.005
"""Relative gap below which :func:`period_search` asks just below each new incumbent: there a
"no" ends the search, where bisection needed six more questions on a 1,000-layer BERT."""


@dataclass(frozen=True)
class PeriodSearch:
    """What :func:`period_search` found: its best plan (or ``None``), a proven lower bound on
    every plan's period, the questions asked and why it stopped early (empty when it did not);
    ``device_states`` when it refused because the device types give too many states per ideal
    (where :func:`relaxed_search` applies)."""

    plan: Plan | None
    bound: float
    questions: int
    stopped: str = ""
    device_states: bool = False


def period_search(inst: Instance, upper: float, lower: float, deadline: Deadline = NO_DEADLINE,
                  max_cells: int = LATTICE_CELLS, tol: float = 1e-7,
                  floor_first: bool = False) -> PeriodSearch:
    r"""Minimise the period of a relay plan by threshold questions answered on the ideal lattice.

    Question at :math:`\theta`: is there a plan whose every stage term (the source's transfer,
    each stage's compute, each boundary's transfer, the sink's transfer; with ``overlap`` each
    at most :math:`\theta`, without it each stage's receive + compute + send at most
    :math:`\theta`) fits? It is answered by one sweep over the ideals of the layer DAG, smallest
    first, growing the open stage one layer at a time (every stage :math:`I \setminus J` can be
    added in a topological order with every intermediate set an ideal). The state is (ideal,
    multiset of device types used, type of the open stage) and its value the least open-stage
    time (compute so far, plus the incoming transfer without overlap): a smaller value never
    hurts what follows, so keeping the least one per state is exact (the dominance argument of
    :mod:`edgepart.solvers.dp`'s feasibility pass). A stage may close at an ideal that splits no
    colocation group, when the boundary's transfer to the next type fits. Unlike ``dp_ideals``
    this never enumerates pairs of ideals, so it reaches graphs of tens of thousands of ideals
    (Inception-v3 at module granularity: 35,683).

    Memory is *not* checked in the sweep, so its "no" is a proof for a relaxation (valid for every
    plan) and its "yes" gives a plan that the shared checker may reject; then the search stops
    with what it has proven. A "no" proves more than :math:`\theta`: every plan's period is at least
    the least term value that the sweep pruned (a plan's terms are each at least those of the
    state that dominates it, so a plan with every term below that value would have survived).

    Search: first just below ``upper`` (usually the incumbent's value, so a "no" proves it
    optimal to ``tol``), then bisection between the proven bound and the best plan, each "no"
    raising the bound to its pruned minimum; a plan found at a midpoint is followed by a
    question just below it (Inception-v3: 4 questions instead of 11), or every time once the
    gap is under :data:`NEAR` (a 1,000-layer BERT on 32 devices: 11 questions instead of 18).
    With ``floor_first``, the very first question is just above ``lower`` (within ``tol / 2``):
    where ``lower`` is a tight bound (the envelope bound often is), its plan is then proven at
    once (the same BERT under ``auto``: 1 question and 9.2 s instead of 16 questions and 32 s,
    the midpoints of a bisection whose bound is already the optimum), and a "no" raises the
    bound a little.
    Stops at ``deadline`` or when one question visits more than ``max_cells`` states (no claim
    from that question).
    """
    return _threshold_search(inst, _Lattice.of(inst), upper, lower, deadline, max_cells, tol,
                             floor_first=floor_first)


def range_search(inst: Instance, order: Sequence[int], upper: float, lower: float,
                 deadline: Deadline = NO_DEADLINE, max_cells: int = LATTICE_CELLS,
                 tol: float = 1e-7) -> Plan | None:
    """The best relay plan (to ``tol``) whose stages are ranges of the topological ``order``
    (every cut a prefix of it), or ``None`` when none beats ``upper`` or the search stops
    first: :func:`period_search` on the chain of the order's prefixes, whose bytes alive are
    still the DAG's. A restriction of the problem, so its bound is not a bound on every plan
    and is not returned; ``lower`` must be a valid lower bound (it starts the bisection). One
    question costs what it costs on a chain of as many layers: a few hundred milliseconds for a
    thousand layers on 32 devices of five types, where the ideals of a wide DAG are too many
    for :func:`period_search` (NASNet-A with 994 layers: about 5 million)."""
    return _threshold_search(inst, _Lattice.of(inst, order), upper, lower, deadline, max_cells,
                             tol).plan


RELAXED_IDEALS = 1_000_000
"""Most ideals :func:`relaxed_search` sweeps: one question takes about 6 s per million on this
project's 2-core machine (a 196-layer NASNet-A: 903,230 ideals)."""


def relaxed_search(inst: Instance, prices: Sequence[float] | np.ndarray, upper: float,
                   lower: float, deadline: Deadline = NO_DEADLINE,
                   max_cells: int = LATTICE_CELLS, tol: float = 1e-7, precision: float = 1e-3
                   ) -> PeriodSearch:
    r"""A lower bound on the period from :func:`period_search`'s sweep with the device counts
    relaxed, for instances whose multisets of used devices are too many (64 devices of five
    types: 486,000 states per ideal).

    Two relaxations are asked in turn, until one says "no": exact counters for the types of
    highest price (as many as fit) and one priced counter for the others, then one priced
    counter for every type. On a priced counter a stage of type :math:`t` adds
    :math:`w_t = \lfloor s\,y_t \rfloor` and the total may not pass
    :math:`\sum_t w_t n_t`, where :math:`y` are ``prices`` per device (e.g. the work bound's,
    :func:`edgepart.bounds.device_prices`) and :math:`s` scales them to the states that fit
    ``max_cells``. Every plan uses at most :math:`n_t` devices of type :math:`t`, so it meets
    every counter: the sweep keeps it, and a "no" at :math:`\theta` proves every plan's period at
    least the least pruned term, exactly as for :func:`period_search`. Transfers, compute,
    contiguity and colocation stay exact, so the bound sees what the fractional work bound
    cannot: a boundary every plan must pay (a 196-layer NASNet-A on 64 devices: 18.16 ms, the
    work bound 1.68 ms) and stages that cannot follow each layer's best class. A "yes" is a plan
    only when its stages' types fit the devices.

    Search: first just below ``upper`` (a "no" proves the incumbent optimal to ``tol``), then
    bisection until the bound is within ``precision`` of the least threshold the relaxation
    met. Stops at ``deadline``, or at once on more than :data:`RELAXED_IDEALS` ideals."""
    lattice = _Lattice.of(inst)
    try:
        ideals = lattice.count(RELAXED_IDEALS, deadline)
    except OutOfTime:
        return PeriodSearch(None, lower, 0, "time limit")
    if ideals > RELAXED_IDEALS:
        return PeriodSearch(None, lower, 0, f"more than {RELAXED_IDEALS} ideals")
    types = DeviceTypes.of(inst, range(len(inst.devices)))
    states = min(LATTICE_STATES, max_cells // ideals) // types.n_types
    if states < 1:
        return PeriodSearch(None, lower, 0, f"{ideals} ideals")
    by_type = [float(prices[m[0]]) for m in types.members]
    relaxations = [_Counters.priced(types, by_type, states, exact_first)
                   for exact_first in (True, False)]
    if relaxations[0].same(relaxations[1]):
        relaxations.pop()
    return _threshold_search(inst, lattice, upper, lower, deadline, max_cells, tol, relaxations,
                             precision, ideals)


def _threshold_search(inst: Instance, lattice: _Lattice, upper: float, lower: float,
                      deadline: Deadline, max_cells: int, tol: float,
                      relaxations: Sequence[_Counters] = (), precision: float | None = None,
                      ideals: int | None = None, floor_first: bool = False) -> PeriodSearch:
    """:func:`period_search` on the sets of ``lattice``, counting the stages exactly per device
    type, or with each of ``relaxations`` in turn until one says "no" (each is a relaxation, so
    its "no" is a proof). ``hi`` is the least threshold known to be met, by a plan or by every
    relaxation; the bisection stops when it is within ``precision`` (default ``tol``) of the
    bound, after the first question (just below ``upper``). ``ideals``: the lattice's size when
    the caller counted it."""
    types = DeviceTypes.of(inst, range(len(inst.devices)))
    alternatives = list(relaxations) or [_Counters.exact(types)]
    per_ideal = max(c.size for c in alternatives) * types.n_types
    if per_ideal > LATTICE_STATES:
        return PeriodSearch(None, lower, 0, f"{per_ideal} states per ideal (device types)",
                            device_states=True)
    max_ideals = max(1, max_cells // per_ideal)
    try:
        if (ideals or lattice.count(max_ideals, deadline)) > max_ideals:
            return PeriodSearch(None, lower, 0, f"more than {max_ideals} ideals")
    except OutOfTime:
        return PeriodSearch(None, lower, 0, "time limit")
    sweep = _Sweep.of(inst, types, lattice)
    best: Plan | None = None
    lo, ub, hi, asked = lower, upper, upper, 0
    below = True  # the next question: just below hi (else the midpoint)
    at_floor = floor_first and lower > 0 and lower * (1 + tol / 2) < hi * (1 - tol)
    while hi * (1 - tol) > lo and (not asked or hi * (1 - (precision or tol)) > lo):
        floor_question, at_floor = at_floor, False  # once, just above the bound
        if floor_question:
            theta = lower * (1 + tol / 2)
        else:
            theta = hi * (1 - tol) if below or not math.isfinite(hi) else (lo + hi) / 2
        asked += 1
        try:
            for counters in alternatives:
                feasible, plan, pruned = sweep.answer(theta, deadline, max_ideals, counters)
                if not feasible or plan is not None:
                    break
        except _Exhausted:
            return PeriodSearch(best, lo, asked, f"a question visited over {max_ideals} ideals")
        except OutOfTime:
            return PeriodSearch(best, lo, asked, "time limit")
        if not feasible:
            lo = max(lo, pruned * (1 - SUM_TOL))
            below = floor_question  # after a "no" at the floor: just below hi, as planned
            continue
        if plan is None:  # the relaxation meets theta; no plan does yet
            if not math.isfinite(theta):
                return PeriodSearch(best, lo, asked, "no finite threshold to bisect from")
            hi, below = theta, False
            continue
        value = evaluate(inst, plan).bottleneck_s
        if validate_plan(inst, plan) or value >= ub:
            why = "memory" if validate_plan(inst, plan) else f"a value of {value:.9g} s"
            return PeriodSearch(best, lo, asked, f"the sweep's plan at {theta:.9g} s has {why}")
        best, ub, hi = plan, value, value
        # a new incumbent: try to prove it, but not twice in a row unless the gap is small
        below = not below or ub - lo <= NEAR * ub
    return PeriodSearch(best, lo, asked)


@dataclass(frozen=True)
class _Sweep:
    """The fixed data of :func:`period_search`'s sweeps (per type: times, links, ends)."""

    lattice: _Lattice
    types: DeviceTypes
    times: np.ndarray
    """(n, T) seconds; ``inf`` where a layer may not run on the type."""
    lat: np.ndarray
    inv_bw: np.ndarray
    src: np.ndarray
    snk: np.ndarray
    closable: tuple[int, ...]
    """Colocation groups as bit masks: a stage may end only at an ideal holding all or none."""
    overlap: bool

    @classmethod
    def of(cls, inst: Instance, types: DeviceTypes, lattice: _Lattice) -> _Sweep:
        g = inst.model
        reps = [m[0] for m in types.members]
        alive_end = sum(g.tensor_bytes[u] for u in g.exits) if inst.sink is not None else 0.0
        lat, inv_bw = _type_links(inst, types)
        return cls(
            lattice, types,
            np.array(inst.times, dtype=float).reshape(len(g.layers), -1)[:, reps], lat, inv_bw,
            np.array([inst.transfer_time(inst.source_index, d, g.input_bytes) for d in reps]),
            np.array([inst.transfer_time(d, inst.sink_index, alive_end) for d in reps]),
            tuple(sum(1 << g.index[lid] for lid in grp) for grp in g.colocate),
            inst.cost_model.overlap)

    def answer(self, theta: float, deadline: Deadline, max_ideals: int, counters: _Counters
               ) -> tuple[bool, Plan | None, float]:
        """Whether the sweep meets ``theta``, a plan that does (memory unchecked; ``None`` when
        the sweep meets it only as a relaxation) and the least pruned term."""
        run = _SweepRun(self, theta, _Budget(max_ideals, deadline), counters)
        end = run.run()
        return (False, None, run.pruned) if end is None else (True, run.plan(end), run.pruned)


@dataclass(frozen=True)
class _Counters:
    r"""What a sweep counts of the stages opened so far: counter :math:`j` adds
    :math:`w_{jt}` for each stage of type :math:`t` and may not pass its cap :math:`c_j`.

    One counter per type (weight 1, cap its number of devices) is the multiset of used devices:
    the exact problem (:meth:`exact`). Fewer counters, each a priced sum over several types with
    cap :math:`c_j = \sum_t w_{jt} n_t`, are a relaxation (:meth:`priced`): a plan uses at most
    :math:`n_t` devices of type :math:`t`, so it meets every such cap, and a sweep over them keeps
    every plan (its "no" is a proof) while its "yes" may use more devices of a type than there are.
    A state is a number in mixed radix, counter 0 the lowest digit."""

    weights: np.ndarray
    """(J, T) non-negative integers."""
    caps: np.ndarray
    """(J,) integers."""

    @classmethod
    def exact(cls, types: DeviceTypes) -> _Counters:
        return cls(np.eye(types.n_types, dtype=np.int64), types.counts.astype(np.int64))

    @classmethod
    def priced(cls, types: DeviceTypes, prices: Sequence[float], states: int,
               exact_first: bool = True) -> _Counters:
        """One priced counter in at most ``states`` states: its weights are the prices scaled
        down to integers so that its cap fits (a type whose scaled price rounds to 0 is free).
        With ``exact_first``, the types of highest price first get exact counters of their own,
        as long as they leave the priced counter :data:`RESOLUTION` states per device."""
        counts = types.counts.astype(np.int64)
        order = sorted(range(types.n_types), key=lambda t: -prices[t])
        exact: list[int] = []
        for t in order if exact_first else ():
            rest = [u for u in order if u not in exact and u != t]
            room = states // math.prod(int(counts[u]) + 1 for u in [*exact, t])
            if room < 1 + RESOLUTION * sum(int(counts[u]) for u in rest):
                break
            exact.append(t)
        rest = [u for u in order if u not in exact]
        rows = [np.eye(types.n_types, dtype=np.int64)[t] for t in exact]
        caps = [int(counts[t]) for t in exact]
        room = states // math.prod(c + 1 for c in caps)
        total = sum(prices[u] * counts[u] for u in rest)
        if rest and total > 0 and room > 1:
            scale = (room - 1) / total
            w = np.zeros(types.n_types, dtype=np.int64)
            for u in rest:
                w[u] = math.floor(prices[u] * scale)
            if w.any():
                rows.append(w)
                caps.append(int(w @ counts))
        weights = np.array(rows, dtype=np.int64).reshape(len(rows), types.n_types)
        return cls(weights, np.array(caps, dtype=np.int64))

    def same(self, other: _Counters) -> bool:
        return (self.weights.shape == other.weights.shape
                and bool((self.weights == other.weights).all() and (self.caps == other.caps).all()))

    @cached_property
    def strides(self) -> np.ndarray:
        return np.cumprod(np.r_[1, self.caps + 1])[:-1].astype(np.int64)

    @property
    def size(self) -> int:
        return math.prod(int(c) + 1 for c in self.caps)

    def opens(self, t: int) -> bool:
        """Whether a stage of type t fits the caps on its own."""
        return bool((self.weights[:, t] <= self.caps).all())

    def step(self, t: int) -> int:
        """How far a stage of type t moves the state."""
        return int(self.weights[:, t] @ self.strides)

    def open(self, opened: np.ndarray, value: np.ndarray) -> np.ndarray:
        """``opened`` (R, S, T) lowered, for every type t, at state s + step(t) by
        ``value[:, s, t]`` wherever that stays within the caps. With the state axis split into
        its digits, a step is a shift along each digit by its weight: slices, no index arrays."""
        r, n_types, n_counters = len(opened), opened.shape[-1], len(self.caps)
        digits = tuple(int(c) + 1 for c in reversed(self.caps))  # C order: highest digit first
        out = opened.reshape(r, *digits, n_types)
        src = value.reshape(r, *digits, n_types)
        for t in range(n_types):
            if not self.opens(t):
                continue
            to: list[slice | int] = [slice(None)] * out.ndim
            frm: list[slice | int] = [slice(None)] * out.ndim
            for j, w in enumerate(self.weights[:, t].tolist()):
                if w:
                    axis = n_counters - j
                    to[axis], frm[axis] = slice(w, None), slice(None, -w)
            to[-1] = frm[-1] = t
            np.minimum(out[tuple(to)], src[tuple(frm)], out=out[tuple(to)])
        return out.reshape(opened.shape)


RESOLUTION = 4
"""Least cap per device of a priced counter before a type is given an exact counter of its own."""


@dataclass
class _Level:
    """The ideals of one size that the sweep reached, as rows: ``grown[r, S, t]`` is the least
    value of an open stage of type t holding at least one layer, ``opened[r, S, t]`` the least
    value of a stage of type t opened at the ideal (``inf``: no such state)."""

    ideals: list[int]
    nbytes: np.ndarray
    ready: list[int]
    grown: np.ndarray
    opened: np.ndarray

    @cached_property
    def row(self) -> dict[int, int]:
        return {ideal: r for r, ideal in enumerate(self.ideals)}


@dataclass
class _SweepRun:
    """One question of :func:`period_search`, a level (ideal size) at a time; every level is
    kept for :meth:`plan`."""

    sweep: _Sweep
    theta: float
    budget: _Budget
    counters: _Counters
    pruned: float = math.inf
    levels: list[_Level] = field(default_factory=list)

    @property
    def limit(self) -> float:
        return self.theta * (1 + SUM_TOL)

    def note(self, over: np.ndarray) -> None:
        """Remember the least finite value among pruned ones."""
        over = over[np.isfinite(over)]
        if over.size:
            self.pruned = min(self.pruned, float(over.min()))

    def cut(self, values: np.ndarray) -> np.ndarray:
        """``values`` above theta become ``inf`` (in place); the least of them is remembered."""
        over = values > self.limit
        if over.any():
            self.note(values[over])
            values[over] = np.inf
        return values

    def run(self) -> tuple[int, int, int] | None:
        """Run the sweep; the final state (ideal, S, t) of a plan, or ``None``."""
        sw, lat = self.sweep, self.sweep.lattice
        shape = (1, self.counters.size, sw.types.n_types)
        opened = np.full(shape, np.inf)
        first = self.cut(sw.src.copy())  # the first stage's value: nothing (overlap) or receive
        for t in range(sw.types.n_types):
            if math.isfinite(first[t]) and self.counters.opens(t):
                opened[0, self.counters.step(t), t] = 0.0 if sw.overlap else first[t]
        level = _Level([0], np.array([lat.start_bytes()]), [lat.starts], np.full(shape, np.inf),
                       opened)
        while level.ideals:
            self.levels.append(level)
            self.budget.spend(len(level.ideals))
            if level.ideals[0] == lat.full:  # the only ideal of its size
                return self.finish(level.grown[0])
            self.close(level, np.array([bool(i) and self.may_close(i) for i in level.ideals]))
            level = self.grow(level)
        return None

    def may_close(self, ideal: int) -> bool:
        return all(ideal & m in (0, m) for m in self.sweep.closable)

    def close(self, level: _Level, rows: np.ndarray) -> None:
        """Open a stage of each free type after every grown state whose boundary fits."""
        sw = self.sweep
        grown = level.grown[rows]
        live = np.isfinite(grown)
        if not live.any():
            return
        tau = sw.lat[None] + level.nbytes[rows][:, None, None] * sw.inv_bw[None]  # (R, T, T2)
        if sw.overlap:
            fit = tau <= self.limit
            if not fit.all():
                self.note(tau[~fit & live.any(axis=1)[:, :, None]])
            # (R, S, T2); 0/1 products summed in float32 are exact (T < 2**24) and use BLAS
            reach = np.matmul(live.astype(np.float32), fit.astype(np.float32)) > 0
            value = np.where(reach, 0.0, np.inf)
        else:
            total = grown[:, :, :, None] + tau[:, None]
            fits = (total <= self.limit) & np.isfinite(total)  # theta may be inf
            self.note(total[~fits])
            value = np.where(fits, np.broadcast_to(tau[:, None], total.shape), np.inf).min(axis=2)
        level.opened[rows] = self.counters.open(level.opened[rows], value)

    def grow(self, level: _Level) -> _Level:
        """The next level: every state plus one addable layer in its open stage."""
        sw, lat = self.sweep, self.sweep.lattice
        base = np.minimum(level.grown, level.opened)
        parents: list[int] = []
        layers: list[int] = []
        children: list[int] = []
        index: dict[int, int] = {}
        for r in np.flatnonzero(np.isfinite(base).any(axis=(1, 2))):
            ideal, rest = level.ideals[r], level.ready[r]
            while rest:
                bit = rest & -rest
                rest ^= bit
                parents.append(int(r))
                layers.append(bit.bit_length() - 1)
                children.append(index.setdefault(ideal | bit, len(index)))
        order = np.argsort(np.array(children, dtype=np.int64), kind="stable")
        par = np.array(parents, dtype=np.int64)[order]
        lay = np.array(layers, dtype=np.int64)[order]
        kid = np.array(children, dtype=np.int64)[order]
        starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]]) if len(kid) else kid
        grown = np.empty((len(starts), *base.shape[1:]))
        step = max(1, _SWEEP_CHUNK // max(1, base[0].size))
        for g0 in range(0, len(starts), step):  # blocks of whole groups of one child each
            self.budget.deadline.check()
            lo = starts[g0]
            hi = starts[g0 + step] if g0 + step < len(starts) else len(kid)
            vals = self.cut(base[par[lo:hi]] + sw.times[lay[lo:hi]][:, None, :])
            grown[g0:g0 + step] = _group_min(vals, starts[g0:g0 + step] - lo)
        alive = np.flatnonzero(np.isfinite(grown).any(axis=(1, 2)))
        ideals = list(index)
        new_ideals: list[int] = []
        nbytes: list[float] = []
        ready: list[int] = []
        for g in alive:
            p, v = int(par[starts[g]]), int(lay[starts[g]])
            high = ideals[int(kid[starts[g]])]
            new_ideals.append(high)
            nbytes.append(lat._alive(float(level.nbytes[p]), v, high))
            ready.append((level.ready[p] ^ (1 << v)) | lat._ready(v, high))
        return _Level(new_ideals, np.array(nbytes), ready, grown[alive],
                      np.full((len(alive), *base.shape[1:]), np.inf))

    def finish(self, grown: np.ndarray) -> tuple[int, int, int] | None:
        sw = self.sweep
        total = self.cut(np.maximum(grown, sw.snk) if sw.overlap else grown + sw.snk)
        if not np.isfinite(total).any():
            return None
        s, t = (int(x) for x in np.unravel_index(np.argmin(total), total.shape))
        return self.sweep.lattice.full, s, t

    def plan(self, end: tuple[int, int, int]) -> Plan | None:
        """Walk back from the final state: each step removes one layer of the open stage whose
        value it explains; a stage that started at the parent ideal steps to the stage before.
        ``None`` when the stages need more devices of a type than there are (a relaxation's
        answer)."""
        sw, inst = self.sweep, self.sweep.lattice.inst
        ideal, s, t = end
        value = self.levels[-1].grown[0, s, t]
        stage_types: list[int] = [t]
        stage_of = [0] * len(inst.model.layers)
        for size in range(len(self.levels) - 1, 0, -1):
            parents = self.levels[size - 1]
            v, r = next((v, parents.row[ideal ^ (1 << v)]) for v in _members(ideal)
                        if ideal ^ (1 << v) in parents.row
                        and value in (parents.grown[parents.row[ideal ^ (1 << v)], s, t]
                                      + sw.times[v, t],
                                      parents.opened[parents.row[ideal ^ (1 << v)], s, t]
                                      + sw.times[v, t]))
            stage_of[v] = len(stage_types) - 1
            ideal ^= 1 << v
            grown = parents.grown[r]
            if grown[s, t] + sw.times[v, t] == value:
                value = grown[s, t]
                continue
            if not ideal:
                break
            s -= self.counters.step(t)
            t, value = self.previous(float(parents.nbytes[r]), grown, s, t)
            stage_types.append(t)
        last = len(stage_types) - 1
        if any(stage_types.count(t) > len(m) for t, m in enumerate(sw.types.members)):
            return None
        free = [list(m) for m in sw.types.members]
        devices = [free[t].pop(0) for t in reversed(stage_types)]
        return Plan.from_assignment(inst, [last - b for b in stage_of], devices, "lattice")

    def previous(self, nbytes: float, grown: np.ndarray, s: int, t2: int) -> tuple[int, float]:
        """The type and value of a grown state at an ideal that a stage of type t2 may follow."""
        sw = self.sweep
        tau = sw.lat[:, t2] + nbytes * sw.inv_bw[:, t2]
        fits = np.isfinite(grown[s]) & (
            (tau <= self.limit) if sw.overlap else (grown[s] + tau <= self.limit))
        # without overlap the next stage started from the least transfer that fits
        t = int(np.argmin(np.where(fits, tau, np.inf)))
        return t, float(grown[s, t])


_SWEEP_CHUNK = 4_000_000
"""Cells of one vectorised block of :meth:`_SweepRun.grow`."""


def _group_min(vals: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.minimum.reduceat(vals, starts, axis=0)`` for increasing ``starts`` from 0: the
    first row of every group, then the j-th rows folded in for the groups that have one (a
    child ideal has as many rows as parents, at most the DAG's width; 2-10 times faster than
    ``reduceat`` along the first axis on the sweep's arrays)."""
    sizes = np.diff(np.r_[starts, len(vals)])
    out = vals[starts]
    for j in range(1, int(sizes.max(initial=1))):
        more = np.flatnonzero(sizes > j)
        out[more] = np.minimum(out[more], vals[starts[more] + j])
    return out


def _members(ideal: int) -> Iterator[int]:
    while ideal:
        bit = ideal & -ideal
        ideal ^= bit
        yield bit.bit_length() - 1
