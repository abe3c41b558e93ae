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
range heuristics use them; none of it calls a solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from edgepart.cost import REL_TOL
from edgepart.formulations.model import NO_DEADLINE, Deadline
from edgepart.instance import Instance
from edgepart.plan import Plan

__all__ = [
    "MAX_IDEALS",
    "CutCosts",
    "CutFamily",
    "DeviceTypes",
    "alive_bytes",
    "colocation_cut_ok",
    "first_stages_bound",
    "ideal_family",
    "path_plan",
    "prefix_family",
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

    def spend(self) -> None:
        self.deadline.check_every(self.spent)
        self.spent += 1
        if self.spent > self.left:
            raise _Exhausted


@dataclass(frozen=True)
class _Lattice:
    """The layer DAG as bit masks, for growing ideals one layer at a time."""

    inst: Instance
    pred: tuple[int, ...]
    entries: int
    full: int
    kept: tuple[bool, ...]
    """A layer's tensor is alive across a boundary while it has a consumer outside (or goes
    to the sink)."""

    @classmethod
    def of(cls, inst: Instance) -> _Lattice:
        g = inst.model
        return cls(inst, tuple(sum(1 << u for u in p) for p in g.pred),
                   sum(1 << e for e in g.entries), (1 << len(g.layers)) - 1,
                   tuple(bool(s) or inst.sink is not None for s in g.succ))

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
        return sum(1 << w for w in self.inst.model.succ[v] if not self.pred[w] & ~ideal)


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
                    0, lat.start_bytes(), lat.entries, self.times(d0),
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
