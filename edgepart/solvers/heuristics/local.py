r"""``local``: our fast heuristic, a DP on a coarsened layer order plus local search.

1. **Devices.** The exact range DP of :mod:`edgepart.solvers.dp` keeps a state per multiset of
   device types used. When that space is too large (many devices that differ), the DP runs on a
   few device subsets instead, each grown until the space reaches :data:`MAX_DP_STATES`: the
   fastest devices; a set grown from the fastest device by speed x bandwidth to the devices
   already chosen; a set grown from the source by the best link to the devices already chosen.
2. **Coarsen, then DP.** Keep as many cut positions as :data:`DP_WORK` allows (all, for a few
   hundred layers and few device types): split the positions that split no colocate group into
   windows of equal work (each layer's best time) and keep, in each window, the position with the
   fewest bytes crossing it; run the DP on them. On a DAG whose ideals (predecessor-closed sets)
   are few enough for :data:`IDEAL_WORK`, also run the DP over ideals (non-range plans).
   On a DAG, steps 2 and 3 run on two layer orders, the given one and
   :func:`~edgepart.cuts.low_alive_order` (whose prefixes carry few bytes; :func:`layer_orders`);
   a range plan of either is a plan of the DAG. The coarse DPs share the first half of the
   time, the local searches the rest (see :func:`_local`).
3. **Local search** from every DP plan, and from SEIFER's partition on its greedy
   highest-bandwidth device path (good paths among many devices that differ), on the full layer
   order and all devices, around the slowest stages (all stages for latency), by groups of
   moves: move one cut to any position between its neighbours; give one stage another device
   (swap or an unused one); merge two neighbouring stages; split a stage in two with an unused
   device; re-cut everything for the current device sequence (an exact DP, :func:`rebalance`).
   The best move of the first group that improves is applied, and the search restarts. The
   objective compares stage times sorted in decreasing order (leximax), so moves that relieve
   the second-slowest stage count too; for latency it is the latency.

What it models: everything in the range cost model (:class:`~.common.RangeModel`): per-device
compute, per-link bandwidth and latency, relay transfers with skip tensors, source and sink,
memory, device classes, colocation, overlap or not. What it ignores: non-range plans of a DAG
beyond the ideal DP's budget (the local search moves range plans of the given order) and, with
direct transfers on a DAG, the exact direct cost (searched with the relay proxy; the result is
re-scored exactly). Time: one coarse DP of at most :data:`DP_WORK` updates (:math:`O(G^2 S T)`
for G cuts) per device subset, the ideal DP when it fits, then local search bounded by the time
limit (default :data:`DEFAULT_TIME_S`); it stops at a local optimum, in one to a few seconds for
hundreds of layers and dozens of devices.

:func:`best_heuristic_plan` is the plain entry point the exact solvers use for a warm start.

References
----------
.. [1] Hu et al., PipeEdge, DSD 2022 (the DP over device types that step 2 runs).
.. [2] Tarnawski et al., NeurIPS 2020 (the DP over ideals).
.. [3] Parthasarathy & Krishnamachari, arXiv 2210.12219 (the greedy path start).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgepart.cuts import (
    MAX_IDEALS,
    CutCosts,
    DeviceTypes,
    ideal_family,
    low_alive_order,
    path_plan,
    prefix_family,
)
from edgepart.instance import Instance
from edgepart.plan import Plan
from edgepart.results import SolveResult
from edgepart.solvers.base import Objective, SolveOptions, best_plan, register
from edgepart.solvers.dp import optimise
from edgepart.solvers.heuristics.common import (
    RangeModel,
    RangePlan,
    device_speed,
    finish_heuristic,
)
from edgepart.solvers.heuristics.even import layer_work
from edgepart.solvers.heuristics.greedy import greedy_range_plan

__all__ = [
    "DEFAULT_TIME_S",
    "DP_WORK",
    "FIRST_DP_SHARE",
    "IDEAL_WORK",
    "MAX_DP_STATES",
    "best_heuristic_plan",
    "coarse_positions",
    "device_subsets",
    "improve",
    "layer_orders",
    "solve_local",
]

MAX_DP_STATES = 16_384
"""Most (device state x type) pairs per cut in the coarse DP."""
DP_WORK = 100_000_000
"""Budget of the coarse DP in state updates: it keeps about sqrt(2 DP_WORK / states) cuts."""
IDEAL_WORK = 300_000_000
"""Budget of the DP over ideals (about a second of numpy work)."""
DEFAULT_TIME_S = 10.0
"""Time budget when the caller gives none."""
FOCUS = 3
"""Slowest stages whose neighbourhoods are searched (period objective)."""
SPLIT_POINTS = 12
"""Most split positions tried per stage."""
FIRST_DP_SHARE = 0.8
"""Share of the time limit the first coarse DP may run to (the others stop at half of it)."""


def coarse_positions(rm: RangeModel, limit: int) -> list[int]:
    """Cut positions for the coarse DP: all when few, else the cheapest cut per work window."""
    allowed = np.array([j for j in range(1, rm.n) if rm.cut_ok[j]], dtype=int)
    if len(allowed) <= limit:
        return [int(j) for j in allowed]
    level = np.concatenate([[0.0], np.cumsum(layer_work(rm))])
    window = np.minimum((level[allowed] / level[-1] * limit).astype(int), limit - 1) \
        if level[-1] > 0 else allowed * limit // rm.n
    keep = [int(allowed[window == w][np.argmin(rm.boundary[allowed[window == w]])])
            for w in np.unique(window)]
    return sorted(keep)


def _state_size(inst: Instance, devices: Sequence[int]) -> int:
    types = DeviceTypes.of(inst, devices)
    return types.n_states * types.n_types


def _grow(inst: Instance, order: Sequence[int], limit: int) -> tuple[int, ...]:
    chosen: list[int] = []
    for d in order:
        if _state_size(inst, [*chosen, d]) > limit:
            break
        chosen.append(d)
    return tuple(chosen)


def _grown(first: int, others: Sequence[int], score: Callable[[list[int], int], float]
           ) -> list[int]:
    """Devices in the order a greedy growth from ``first`` adds them (best ``score`` next)."""
    chosen, rest = [first], [d for d in others if d != first]
    while rest:
        nxt = max(rest, key=lambda d: score(chosen, d))
        chosen.append(nxt)
        rest.remove(nxt)
    return chosen


def device_subsets(inst: Instance, rm: RangeModel, limit: int = MAX_DP_STATES
                   ) -> list[tuple[int, ...]]:
    """All devices when the DP state space allows; else subsets grown (until the state space
    reaches ``limit``) by speed, by speed x mean bandwidth to the chosen ones from the fastest
    device, and by best bandwidth to the chosen ones from the source (or sink)."""
    everyone = tuple(range(rm.nd))
    if _state_size(inst, everyone) <= limit:
        return [everyone]
    speed = device_speed(inst)
    fastest = [int(d) for d in np.argsort(-speed, kind="stable")]
    sym = np.minimum(rm.bw, rm.bw.T)
    orders = [fastest, _grown(fastest[0], fastest, lambda chosen, d: speed[d] * float(
        sym[chosen, d].mean()))]
    end = next((e for e in (rm.src, rm.snk) if e is not None), None)
    if end is not None:
        orders.append(_grown(end, fastest, lambda chosen, d: float(sym[chosen, d].max())))
    return list(dict.fromkeys(s for s in (_grow(inst, o, limit) for o in orders) if s))


def _dp_start(inst: Instance, rm: RangeModel, positions: list[int], devices: tuple[int, ...],
              objective: Objective, deadline: float) -> RangePlan | None:
    prob = CutCosts.of(inst, prefix_family(inst, positions), DeviceTypes.of(inst, devices))
    out = optimise(prob, objective, inst.cost_model.overlap, deadline)
    if out.path is None:
        return None
    free = [list(m) for m in prob.types.members]
    sizes = prob.family.sets.sum(axis=1)
    return RangePlan((0, *(int(sizes[i]) for _, i, _ in out.path)),
                     tuple(free[t].pop(0) for _, _, t in out.path))


def _ideal_start(inst: Instance, devices: tuple[int, ...], objective: Objective,
                 deadline: float) -> Plan | None:
    """The DP over ideals (non-range plans of a DAG) when it fits the work budget."""
    if inst.model.is_chain:
        return None
    family = ideal_family(inst, MAX_IDEALS)
    types = DeviceTypes.of(inst, devices)
    if family is None or family.pairs * types.n_states * types.n_types > IDEAL_WORK:
        return None
    prob = CutCosts.of(inst, family, types)
    out = optimise(prob, objective, inst.cost_model.overlap, deadline)
    return None if out.path is None else path_plan(inst, prob, out.path)


# ---------------------------------------------------------------------------------------------
# Local search
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Search:
    rm: RangeModel
    objective: Objective
    deadline: float = math.inf
    """A re-cut of every stage stops (no candidate) past it."""

    def key(self, rp: RangePlan) -> tuple[float, ...] | None:
        if not self.rm.valid(rp):
            return None
        if self.objective is Objective.LATENCY:
            return (self.rm.latency(rp),)
        return tuple(sorted(self.rm.stage_times(rp), reverse=True))

    def focus(self, rp: RangePlan) -> list[int]:
        if self.objective is Objective.LATENCY:
            return list(range(len(rp.devices)))
        times = self.rm.stage_times(rp)
        return sorted(range(len(times)), key=lambda b: -times[b])[:FOCUS]

    def moves(self, rp: RangePlan) -> Iterator[list[RangePlan]]:
        """Groups of neighbours around the focus stages, then a re-cut of everything; the best
        of a group is tried at once."""
        for b in self.focus(rp):
            for e in (b, b + 1):
                yield list(_shifts(self.rm, rp, e))
            for s in (b, b - 1, b + 1):
                yield list(_device_moves(self.rm, rp, s))
            yield list(_merges(rp, b))
            yield list(_splits(self.rm, rp, b))
        yield [x for x in (rebalance(self.rm, rp.devices, self.objective, self.deadline),)
               if x is not None]

    def best(self, group: list[RangePlan]) -> tuple[tuple[float, ...], RangePlan] | None:
        scored = [(k, i) for i, cand in enumerate(group) if (k := self.key(cand)) is not None]
        if not scored:
            return None
        k, i = min(scored)
        return k, group[i]


def _shifts(rm: RangeModel, rp: RangePlan, e: int) -> Iterator[RangePlan]:
    """Move cut e to any allowed position between its neighbouring cuts."""
    c = rp.cuts
    if 0 < e < len(c) - 1:
        for p in range(c[e - 1] + 1, c[e + 1]):
            if p != c[e] and rm.cut_ok[p]:
                yield RangePlan((*c[:e], p, *c[e + 1:]), rp.devices)


def _device_moves(rm: RangeModel, rp: RangePlan, s: int) -> Iterator[RangePlan]:
    """Give stage s another device: swap with the stage that has it, or take an unused one."""
    devs = rp.devices
    if not 0 <= s < len(devs):
        return
    for d in range(rm.nd):
        if d != devs[s]:
            new = list(devs)
            if d in devs:
                new[devs.index(d)] = devs[s]
            new[s] = d
            yield RangePlan(rp.cuts, tuple(new))


def _merges(rp: RangePlan, b: int) -> Iterator[RangePlan]:
    """Merge stage b with a neighbour, on either of the two devices."""
    c, devs = rp.cuts, rp.devices
    for left in (b - 1, b):
        if 0 <= left < len(devs) - 1:
            for keep in (devs[left], devs[left + 1]):
                yield RangePlan((*c[:left + 1], *c[left + 2:]),
                                (*devs[:left], keep, *devs[left + 2:]))


def _splits(rm: RangeModel, rp: RangePlan, b: int) -> Iterator[RangePlan]:
    """Split stage b at a few positions, the new part on an unused device (before or after)."""
    c, devs = rp.cuts, rp.devices
    inner = [p for p in range(c[b] + 1, c[b + 1]) if rm.cut_ok[p]]
    if len(inner) > SPLIT_POINTS:
        picks = np.linspace(0, len(inner) - 1, SPLIT_POINTS).round().astype(int)
        inner = sorted({inner[i] for i in picks} | {min(inner, key=lambda p: rm.boundary[p])})
    unused = [d for d in range(rm.nd) if d not in devs]
    for p in inner:
        cuts = (*c[:b + 1], p, *c[b + 1:])
        for u in unused:
            yield RangePlan(cuts, (*devs[:b], devs[b], u, *devs[b + 1:]))
            yield RangePlan(cuts, (*devs[:b], u, devs[b], *devs[b + 1:]))


def rebalance(rm: RangeModel, devices: Sequence[int], objective: Objective,
              deadline: float = math.inf) -> RangePlan | None:
    r"""The best cuts for a fixed device sequence (every device gets a non-empty stage).

    With the devices fixed, stage b's time is a function of its two cuts only
    (``in(i) + compute(i, j) + out(j)``, or their max), so a DP over (stage, cut) is exact:
    :math:`f_b(j) = \min_i \max(f_{b-1}(i), T_b(i, j))` (``+`` for latency), time
    :math:`O(k m^2)` for :math:`m` allowed cut positions.
    """
    pos = np.array([j for j in range(rm.n + 1) if rm.cut_ok[j]])
    serial = not rm.inst.cost_model.overlap
    ends = [rm.src, *devices, rm.snk]
    f = np.where(pos == 0, 0.0, np.inf)
    choice = []
    for b, d in enumerate(devices):
        if time.perf_counter() > deadline:  # a stage's range costs: O(m^2), ~50 ms at m = 1,000
            return None
        tin = np.array([rm.link_time(ends[b], d, rm.boundary[i]) for i in pos])
        tout = np.array([rm.link_time(d, ends[b + 2], rm.boundary[j]) for j in pos])
        comp = rm.range_costs(pos, d)
        if b == len(devices) - 1:
            comp = np.where(pos[None, :] == rm.n, comp, np.inf)
        parts = (tin[:, None], comp, tout[None, :])
        stage = sum(parts) if serial or objective is Objective.LATENCY else np.maximum.reduce(
            np.broadcast_arrays(*parts))
        total = f[:, None] + stage if objective is Objective.LATENCY else np.maximum(
            f[:, None], stage)
        choice.append(total.argmin(axis=0))
        f = total.min(axis=0)
    if not np.isfinite(f[-1]):
        return None
    cuts, a = [len(pos) - 1], len(pos) - 1
    for arg in reversed(choice):
        a = int(arg[a])
        cuts.append(a)
    return RangePlan(tuple(int(pos[a]) for a in reversed(cuts)), tuple(devices))


def improve(rm: RangeModel, rp: RangePlan, objective: Objective, deadline: float) -> RangePlan:
    """Local search from a valid range plan: the first group of moves whose best member
    improves is applied, until a local optimum or the deadline."""
    search = _Search(rm, objective, deadline)
    key = search.key(rp)
    if key is None:
        return rp
    while time.perf_counter() < deadline:
        for group in search.moves(rp):
            found = search.best(group)
            if found is not None and found[0] < key:
                key, rp = found
                break
            if time.perf_counter() > deadline:
                return rp
        else:
            return rp
    return rp


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def layer_orders(inst: Instance) -> list[Instance]:
    """The instance as given and, on a DAG, listed in :func:`~edgepart.cuts.low_alive_order`
    when that differs: range plans of either are plans of the instance (on wide DAGs the
    low-alive order's are the better ones: NASNet-A, 994 layers on 32 devices, 7.25 ms against
    8.68 ms)."""
    if inst.model.is_chain:
        return [inst]
    order = low_alive_order(inst)
    return [inst] if order == tuple(range(len(order))) else [inst, inst.reordered(order)]


def _local(inst: Instance, options: SolveOptions, start: float
           ) -> tuple[Plan | None, dict[str, object]]:
    budget = DEFAULT_TIME_S if options.time_limit is None else options.time_limit
    models = [RangeModel(view) for view in layer_orders(inst)]
    subsets = device_subsets(inst, models[0])  # devices only: the same for every order
    starts, info = _dp_starts(inst, models, subsets, options, start, budget)
    plans: list[Plan | None] = []
    half = start + budget / 2
    for k, rm in enumerate(models):  # an equal slice of what is left per order
        now = max(half, time.perf_counter())
        until = now + (start + budget - now) / (len(models) - k)
        plans += [improve(rm, rp, options.objective, until).to_plan(rm.inst) for rp in starts[k]]
        plans += [rp.to_plan(rm.inst) for rp in starts[k]]
    plans += [_ideal_start(inst, devices, options.objective, start + budget)
              for devices in subsets]
    return best_plan(inst, plans, options), info


def _dp_starts(inst: Instance, models: list[RangeModel], subsets: list[tuple[int, ...]],
               options: SolveOptions, start: float, budget: float
               ) -> tuple[list[list[RangePlan]], dict[str, object]]:
    """Per layer order, the coarse DP's plan on each device subset and the greedy path. The DPs
    share the first half of the time, subset by subset and, for each, the given order first;
    the very first may run on to :data:`FIRST_DP_SHARE` of it, so that a short limit still
    gets one (994 layers on 32 devices: 0.3-0.45 s, and a 1 s budget left it under 0.5 s)."""
    half = start + budget / 2
    positions = [coarse_positions(rm, max(16, math.isqrt(
        2 * DP_WORK // max(_state_size(rm.inst, s) for s in subsets)))) for rm in models]
    starts: list[list[RangePlan]] = [[] for _ in models]
    for i, devices in enumerate(subsets):
        for k, rm in enumerate(models):
            rp = _dp_start(rm.inst, rm, positions[k], devices, options.objective,
                           start + budget * FIRST_DP_SHARE if i == k == 0 else half)
            starts[k] += [] if rp is None else [rp]
    info: dict[str, object] = {}
    for k, rm in enumerate(models):
        info["given_order" if rm.inst is inst else "low_alive_order"] = {
            "coarse_cuts": len(positions[k]), "device_subsets": [len(s) for s in subsets],
            "dp_start_s": min((rm.objective(rp, options.objective.value) for rp in starts[k]),
                              default=math.inf)}
        starts[k] += [rp for rp in (greedy_range_plan(rm.inst, rm),)
                      if rp is not None and rm.valid(rp)]
    return starts, info


def best_heuristic_plan(inst: Instance, options: SolveOptions) -> Plan | None:
    """The ``local`` heuristic's plan (valid, within the caller's limits) or ``None``: a warm
    start for the exact solvers."""
    return _local(inst, options, time.perf_counter())[0]


@register("local")
def solve_local(inst: Instance, options: SolveOptions) -> SolveResult:
    """Coarse DP, then local search over cuts and devices (see the module docstring)."""
    start = time.perf_counter()
    plan, info = _local(inst, options, start)
    return finish_heuristic(inst, plan, method="local", options=options, start=start,
                            extra=info)
