"""Brute force: every plan of a tiny instance, each scored by the shared evaluator.

The reference that every exact method is checked against. A plan is a monotone stage index per
layer (``stage(u) <= stage(v)`` on every edge, stages 0..k-1 all non-empty) and an ordered choice
of k distinct devices; there are at most ``k^n * D!/(D-k)!`` of them, so it refuses instances with
more than :data:`MAX_PLANS` candidates.

Beyond pipeline plans (``options.plan_space``, see :mod:`edgepart.plan`) each stage takes instead
a *group mode* from the devices no earlier stage uses: one device, a set of 2 to ``max_group``
devices replicated, or such a set split with each of its devices as lead and every combination of
schemes for the stage's layers that need one (see :func:`edgepart.cost.split_problems`); the
candidates are counted first and capped the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from itertools import combinations, permutations, product

from edgepart.cost import LayerShape, evaluate, layer_shapes, validate_plan
from edgepart.instance import Instance
from edgepart.plan import Mode, Plan, Scheme, Stage
from edgepart.results import SolveResult, Termination
from edgepart.solvers.base import PlanSpace, SolveOptions, finish, register, respects_limits

__all__ = ["MAX_PLANS", "solve_brute"]

MAX_PLANS = 2_000_000


def _stage_maps(inst: Instance, k: int) -> Iterator[list[int]]:
    """Every monotone layer -> stage map onto exactly the stages 0..k-1."""
    n = len(inst.model.layers)
    pred = inst.model.pred
    sigma = [0] * n

    def rec(v: int) -> Iterator[list[int]]:
        if v == n:
            if len(set(sigma)) == k:
                yield list(sigma)
            return
        for b in range(max((sigma[u] for u in pred[v]), default=0), k):
            sigma[v] = b
            yield from rec(v + 1)

    yield from rec(0)


GroupChoice = tuple[Mode, tuple[int, ...]]


def _groups(free: tuple[int, ...], options: SolveOptions) -> Iterator[GroupChoice]:
    """Every group mode of the plan space over ``free`` devices (split: every lead)."""
    replicate = options.plan_space in (PlanSpace.REPLICATE, PlanSpace.HYBRID)
    split = options.plan_space in (PlanSpace.SPLIT, PlanSpace.HYBRID)
    for d in free:
        yield Mode.SINGLE, (d,)
    for size in range(2, min(len(free), options.max_group or len(free)) + 1):
        for subset in combinations(free, size):
            if replicate:
                yield Mode.REPLICATE, subset
            if split:
                for lead in subset:
                    yield Mode.SPLIT, (lead, *(d for d in subset if d != lead))


def _group_sequences(free: tuple[int, ...], k: int, options: SolveOptions
                     ) -> Iterator[list[GroupChoice]]:
    if k == 0:
        yield []
        return
    for choice in _groups(free, options):
        rest = tuple(d for d in free if d not in choice[1])
        for tail in _group_sequences(rest, k - 1, options):
            yield [choice, *tail]


def _scheme_choices(inst: Instance, shapes: tuple[LayerShape | None, ...], layers: list[int]
                    ) -> list[dict[str, Scheme]]:
    """Every scheme assignment of a split stage's layers (elementwise layers after the first
    take their producer's); none when a layer has no shape."""
    ids, options = [], []
    for pos, v in enumerate(layers):
        shape = shapes[v]
        if pos == 0 or (shape is not None and shape.kind != "elementwise"):
            ids.append(inst.model.layers[v].id)
            options.append(shape.schemes if shape is not None else ())
    return [dict(zip(ids, combo, strict=True)) for combo in product(*options)]


def _stages(inst: Instance, shapes: tuple[LayerShape | None, ...], layers: list[int],
            choice: GroupChoice) -> list[Stage]:
    mode, members = choice
    ids = [inst.model.layers[v].id for v in layers]
    devices = [inst.devices[d].id for d in members]
    if mode is Mode.SINGLE:
        return [Stage(devices[0], tuple(ids))]
    if mode is Mode.REPLICATE:
        return [Stage.group(devices, mode, ids)]
    return [Stage.group(devices, mode, ids, s) for s in _scheme_choices(inst, shapes, layers)]


def _group_plans(inst: Instance, options: SolveOptions) -> Iterator[Plan]:
    n, nd = len(inst.model.layers), len(inst.devices)
    shapes = layer_shapes(inst)
    for k in range(1, min(n, nd) + 1):
        for sigma in _stage_maps(inst, k):
            layers = [[v for v in range(n) if sigma[v] == b] for b in range(k)]
            for seq in _group_sequences(tuple(range(nd)), k, options):
                per_stage = [_stages(inst, shapes, layers[b], seq[b]) for b in range(k)]
                for stages in product(*per_stage):
                    yield Plan(tuple(stages), inst.name)


def _pipeline_plans(inst: Instance) -> Iterator[Plan]:
    n, nd = len(inst.model.layers), len(inst.devices)
    for k in range(1, min(n, nd) + 1):
        for sigma in _stage_maps(inst, k):
            for devs in permutations(range(nd), k):
                yield Plan.from_assignment(inst, sigma, devs)


def _count(inst: Instance, options: SolveOptions) -> int:
    """An upper bound on the candidates (for groups: 3 schemes per layer of a split stage)."""
    n, nd = len(inst.model.layers), len(inst.devices)
    kmax = min(n, nd)
    if options.plan_space is PlanSpace.PIPELINE:
        return sum(k**n * math.perm(nd, k) for k in range(1, kmax + 1))
    sequences = sum(sum(1 for _ in _group_sequences(tuple(range(nd)), k, options)) * k**n
                    for k in range(1, kmax + 1))
    return sequences * 3**n


@register("brute")
def solve_brute(inst: Instance, options: SolveOptions) -> SolveResult:
    count = _count(inst, options)
    if count > MAX_PLANS:
        return finish(inst, None, method="brute", options=options,
                      termination=Termination.UNSUPPORTED,
                      message=f"brute force would try ~{count:.2g} plans (limit {MAX_PLANS})")
    start = time.perf_counter()
    best: tuple[float, Plan] | None = None
    plans = (_pipeline_plans(inst) if options.plan_space is PlanSpace.PIPELINE
             else _group_plans(inst, options))
    for plan in plans:
        if validate_plan(inst, plan):
            continue
        m = evaluate(inst, plan)
        if not respects_limits(m.latency_s, m.bottleneck_s, options):
            continue
        value = m.objective(options.objective.value)
        if best is None or value < best[0]:
            best = (value, plan)
    wall = time.perf_counter() - start
    if best is None:
        return finish(inst, None, method="brute", options=options,
                      termination=Termination.INFEASIBLE, wall_time_s=wall,
                      message="no plan satisfies memory, classes, colocation and limits")
    return finish(inst, best[1], method="brute", options=options, termination=Termination.OPTIMAL,
                  bound=best[0], wall_time_s=wall, exact=True)
