"""Heuristics: every plan is valid and never better than the proven optimum; each method does
what its source describes on small cases with a known answer; ``local`` scales."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import cost_models, random_instance, two_branches

from edgepart import (
    SolutionStatus,
    SolveResult,
    Stage,
    Termination,
    evaluate,
    load_instance,
    solve,
    validate_plan,
)
from edgepart.cuts import low_alive_order
from edgepart.instance import Instance
from edgepart.solvers.base import METHODS, Objective, SolveOptions, get_method
from edgepart.solvers.heuristics.common import RangeModel, RangePlan, balanced_cuts
from edgepart.solvers.heuristics.local import best_heuristic_plan, rebalance
from edgepart.solvers.heuristics.neurosurgeon import mobile_and_server
from edgepart.solvers.heuristics.pipeedge import device_bandwidth
from edgepart.solvers.heuristics.seifer import candidate_cuts, seifer_objective, seifer_partition

HEURISTICS = ["local", "pipeedge", "seifer", "greedy", "random", "even", "amp4ec",
              "neurosurgeon"]

small = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6), "n": st.integers(1, 6), "nd": st.integers(1, 3),
    "chain": st.booleans(), "memory": st.booleans(), "restrict": st.booleans(),
    "colocate": st.booleans(), "ends": st.booleans(), "uniform_links": st.booleans()})


def chain(bytes_out: list[float], times: list[float], nd: int = 3, params: float = 0.0,
          **extra: Any) -> Instance:
    """A chain with given tensor sizes, per-layer times (on every device) and parameter bytes,
    uniform links of 1 MB/s."""
    n = len(times)
    data = random_instance(0, n=n, nd=nd, chain=True, ends=False, uniform_links=True,
                           class_times=False)
    for v, layer in enumerate(data["model"]["layers"]):
        layer.update(flops=times[v] * 1e7, output_bytes=bytes_out[v], param_bytes=params,
                     work_bytes=0)
    for d in data["devices"]:
        d.update(flops_per_s=1e7, memory_bytes=1e12)
    data["links"] = {"default": {"bandwidth_bytes_per_s": 1e6, "latency_s": 0.0}}
    data.update(extra)
    return load_instance(data)


def stages(result: SolveResult) -> tuple[Stage, ...]:
    assert result.plan is not None, result.message
    return result.plan.stages


def test_every_heuristic_is_registered() -> None:
    get_method("brute")
    assert set(HEURISTICS) | {"dp", "dp_ideals"} <= set(METHODS)


@settings(max_examples=80, deadline=None)
@given(small, cost_models, st.sampled_from(["bottleneck", "latency"]))
def test_heuristics_give_valid_plans_never_better_than_the_optimum(
        params: dict[str, Any], model: tuple[str, bool], objective: str) -> None:
    inst = load_instance(random_instance(**params, transfer=model[0], overlap=model[1]))
    optimum = solve(inst, "brute", objective=objective)
    for method in HEURISTICS:
        result = solve(inst, method, objective=objective)
        assert result.termination is Termination.FINISHED, (method, result.message)
        if result.plan is not None:
            assert validate_plan(inst, result.plan) == [], method
            assert optimum.status is SolutionStatus.OPTIMAL
            assert result.objective_s >= optimum.objective_s * (1 - 1e-9), method
            assert result.bound_s == -np.inf


@settings(max_examples=25, deadline=None)
@given(small, cost_models)
def test_local_finds_the_range_optimum_on_small_chains(params: dict[str, Any],
                                                        model: tuple[str, bool]) -> None:
    params = {**params, "chain": True}
    inst = load_instance(random_instance(**params, transfer=model[0], overlap=model[1]))
    exact, local = solve(inst, "dp"), solve(inst, "local")
    assert local.has_plan == exact.has_plan
    if exact.has_plan:  # few layers: the coarse DP keeps every cut, so it is the exact DP
        assert local.objective_s == pytest.approx(exact.objective_s, rel=1e-9)


def test_best_heuristic_plan_is_a_valid_warm_start() -> None:
    inst = load_instance(random_instance(16, n=12, nd=4, memory=True))  # no device holds it all
    plan = best_heuristic_plan(inst, SolveOptions())
    assert plan is not None and validate_plan(inst, plan) == []
    assert solve(inst, "cpsat", warm_start=plan, time_limit=20).objective_s <= (
        evaluate(inst, plan).bottleneck_s * (1 + 1e-9))


def test_local_scales_to_hundreds_of_layers_and_dozens_of_devices() -> None:
    inst = load_instance(random_instance(3, n=300, nd=24))
    start = time.perf_counter()
    result = solve(inst, "local", time_limit=20)
    assert time.perf_counter() - start < 20 * 1.05 + 1  # the limit bounds the call (quiet: ~1 s)
    assert result.has_plan
    assert result.objective_s <= solve(inst, "pipeedge").objective_s * (1 + 1e-9)


def test_rebalance_is_exact_for_a_fixed_device_sequence() -> None:
    inst = load_instance(random_instance(8, n=6, nd=3, chain=True, overlap=False))
    rm = RangeModel(inst)
    best = rebalance(rm, (2, 0, 1), Objective.BOTTLENECK)
    assert best is not None
    cuts = [(0, a, b, 6) for a in range(1, 6) for b in range(a + 1, 6)]
    plans = [RangePlan(c, (2, 0, 1)) for c in cuts]
    assert rm.period(best) == pytest.approx(min(rm.period(p) for p in plans if rm.valid(p)))


def test_seifer_cuts_only_where_one_tensor_crosses_and_minimises_total_transfer() -> None:
    data = random_instance(0, n=6, nd=3, chain=True, ends=False)
    data["model"]["edges"].append({"src": "l1", "dst": "l3"})  # a skip over l2
    inst = load_instance(data)
    assert candidate_cuts(inst, RangeModel(inst)) == [1, 2, 4, 5]  # not 3: l1 and l2 cross
    small_memory = chain([5e5, 1e5, 9e5, 2e5, 8e5], [1, 1, 1, 1, 1])
    rm = RangeModel(small_memory)
    part = seifer_partition(small_memory, rm)
    assert part is not None and part.cuts == (0, 5)  # everything fits: no transfer at all


def test_seifer_partition_may_use_more_segments_to_move_fewer_bytes() -> None:
    """SEIFER's ``min_cost_path`` minimises the sum over any number of segments up to N, not
    over the fewest segments that fit.

    Four layers of 1 MB parameters, outputs 0.1, 0.4, 0.1 MB at cuts 1, 2, 3 (the last output
    is not sent: no sink), devices of 2.5 MB. A segment needs its parameters plus its receive
    and send buffers: one layer 1.1-1.5 MB, two layers 2.2-2.4 MB ([0,2): 2 + 0.4, [1,3):
    2 + 0.1 + 0.1, [2,4): 0.4 + 2), three 3.1 MB, four 4 MB. Every segmentation (cuts: sum):
      none: 4 MB segment, infeasible      {1}: [1,4) 3.1 MB, infeasible
      {2}: 0.4 MB (the fewest segments)   {3}: [0,3) 3.1 MB, infeasible
      {1, 2}: 0.5 MB    {1, 3}: 0.2 MB (the minimum)    {2, 3}: 0.5 MB    {1, 2, 3}: 0.6 MB
    """
    def four_layers(nd: int) -> Instance:
        data = chain([1e5, 4e5, 1e5, 1e5], [1, 1, 1, 1], nd=nd, params=1e6).to_dict()
        for d in data["devices"]:
            d["memory_bytes"] = 2.5e6
        return load_instance(data)

    inst = four_layers(4)
    rm = RangeModel(inst)
    part = seifer_partition(inst, rm)
    assert part is not None and part.cuts == (0, 1, 3, 4)
    assert rm.boundary[list(part.cuts[1:-1])].sum() == pytest.approx(2e5)
    for method in ("seifer", "greedy"):  # the greedy baseline shares the partition
        assert [s.layers for s in stages(solve(inst, method))] == [
            ("l0",), ("l1", "l2"), ("l3",)], method
    two = four_layers(2)  # two devices: at most two segments, so {2} is the best
    part = seifer_partition(two, RangeModel(two))
    assert part is not None and part.cuts == (0, 2, 4)


def check_min_sum_partition(inst: Instance) -> None:
    """``seifer_partition`` against every subset of the candidate cuts: segments that fit the
    smallest device, at most D of them, minimum total transfer; ties to the fewest segments."""
    rm = RangeModel(inst)
    n, nd = rm.n, rm.nd
    cap = rm.capacity.min() * (1 + 1e-9)
    cands = candidate_cuts(inst, rm)
    feasible = []  # (total bytes, segments) of every feasible segmentation
    for r in range(min(nd - 1, len(cands)) + 1):
        for inner in itertools.combinations(cands, r):
            cuts = (0, *inner, n)
            if all(rm.memory_row(cuts[b], np.array([cuts[b + 1]]))[0] <= cap
                   for b in range(len(cuts) - 1)):
                feasible.append((float(rm.boundary[list(inner)].sum()), len(cuts) - 1))
    part = seifer_partition(inst, rm)
    assert (part is None) == (not feasible)
    if part is None:
        return
    best = min(total for total, _ in feasible)
    fewest = min(k for total, k in feasible if total <= best * (1 + 1e-9))
    chosen = part.cuts
    assert chosen[0] == 0 and chosen[-1] == n and set(chosen[1:-1]) <= set(cands)
    assert len(chosen) - 1 == fewest <= nd
    assert rm.boundary[list(chosen[1:-1])].sum() == pytest.approx(best, rel=1e-9, abs=0)
    assert all(rm.memory_row(chosen[b], np.array([chosen[b + 1]]))[0] <= cap
               for b in range(len(chosen) - 1))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 8), st.integers(1, 5),
       st.sampled_from(["chain", "forward", "dag"]))
def test_seifer_partition_is_the_minimum_sum_segmentation(seed: int, n: int, nd: int,
                                                           shape: str) -> None:
    check_min_sum_partition(load_instance(random_instance(seed, n=n, nd=nd, shape=shape,
                                                          memory=True)))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(2, 2), (2, 3), (2, 4), (3, 2), (4, 2)]), st.integers(1, 6),
       st.data())
def test_seifer_partition_is_the_minimum_sum_when_the_fewest_segments_are_forced(
        shape: tuple[int, int], nd: int, data: st.DataObject) -> None:
    """Chains of k * L layers of 1 MB parameters and outputs of 0.1 or 0.4 MB on devices of
    L + 0.8 MB: a segment holds at most L layers, so k segments force cuts at L, 2L, ...; more
    segments can move fewer bytes (in about one draw in five; random instances rarely do)."""
    per_segment, k = shape
    outputs = data.draw(st.lists(st.sampled_from([1e5, 4e5]), min_size=per_segment * k,
                                 max_size=per_segment * k))
    spec = chain(outputs, [1] * len(outputs), nd=nd, params=1e6).to_dict()
    for d in spec["devices"]:
        d["memory_bytes"] = per_segment * 1e6 + 8e5
    check_min_sum_partition(load_instance(spec))


def test_seifer_and_greedy_follow_the_high_bandwidth_path() -> None:
    inst = chain([1e5, 1e5, 1e5], [1, 1, 1], nd=3, params=2e6)
    data = inst.to_dict()
    for d in data["devices"]:
        d["memory_bytes"] = 2.5e6  # one layer (and its buffers) per device
    bw = data["links"]["matrix"]["bandwidth_bytes_per_s"]
    for i in range(3):
        for j in range(3):
            bw[i][j] = 1e3 if i != j else 0
    bw[2][0] = bw[0][1] = 1e7  # the fast path is d2 -> d0 -> d1
    inst = load_instance(data)
    rm = RangeModel(inst)
    for method in ("seifer", "greedy"):
        result = solve(inst, method)
        assert [s.device for s in stages(result)] == ["d2", "d0", "d1"], method
        assert result.extra["seifer_objective_s"] == pytest.approx(
            seifer_objective(rm, (0, 1, 2, 3), (2, 0, 1)))


def test_random_is_seeded_and_reports_its_spread() -> None:
    inst = load_instance(random_instance(5, n=8, nd=4))
    a, b = (solve(inst, "random", seed=3, extra={"draws": 40}) for _ in range(2))
    assert a.plan == b.plan and a.extra == b.extra
    assert a.extra["valid_draws"] <= 40
    assert a.extra["min_s"] <= a.extra["median_s"] == a.objective_s <= a.extra["max_s"]
    assert a.extra["returned"] == "median draw"


def test_even_splits_work_evenly_over_the_fastest_devices() -> None:
    assert balanced_cuts(np.ones(8), 4, np.ones(9, dtype=bool)) == (0, 2, 4, 6, 8)
    inst = chain([1.0] * 8, [1.0] * 8, nd=4)
    result = solve(inst, "even")
    assert [len(s.layers) for s in stages(result)] == [2, 2, 2, 2]


def test_neurosurgeon_makes_at_most_one_split_from_the_source() -> None:
    inst = load_instance(random_instance(6, n=8, nd=4))
    mobile, server = mobile_and_server(inst)
    assert inst.devices[mobile].id == inst.source
    result = solve(inst, "neurosurgeon", objective="latency")
    assert len(stages(result)) <= 2
    assert {s.device for s in stages(result)} <= {inst.devices[mobile].id,
                                                      inst.devices[server].id}


def test_pipeedge_objective_matches_ours_when_its_model_holds() -> None:
    # a chain, uniform links without latency, no source or sink: PipeEdge's model is exact
    inst = chain([4e5, 1e5, 3e5, 2e5, 1e5], [1.0, 2.0, 1.5, 0.5, 1.0], nd=3)
    result = solve(inst, "pipeedge")
    assert result.objective_s == pytest.approx(result.extra["pipeedge_objective_s"])
    assert result.objective_s == pytest.approx(solve(inst, "dp").objective_s)
    assert device_bandwidth(RangeModel(inst)) == pytest.approx([1e6] * 3)
    # with a source far away, PipeEdge does not see the input transfer: its estimate is low
    data = inst.to_dict()
    data["source"] = "d0"
    data["model"]["input_bytes"] = 5e6
    shifted = solve(load_instance(data), "pipeedge")
    assert shifted.objective_s > shifted.extra["pipeedge_objective_s"]


def test_amp4ec_uses_every_device_by_score() -> None:
    inst = chain([1.0] * 6, [1.0] * 6, nd=3)
    result = solve(inst, "amp4ec")
    assert result.extra["k"] == 3 and len(stages(result)) == 3


def test_low_alive_order_finishes_a_branch_before_it_starts_the_next() -> None:
    # By hand: after x, a1 and b1 each grow the boundary by 10 (x still has another reader):
    # a1 (lower index). Then a2 grows it by 1 - 10 = -9, b1 by 10 - 1 = 9: a2. Then b1, b2, j.
    inst = two_branches()
    order = low_alive_order(inst)
    assert [inst.model.layers[v].id for v in order] == ["x", "a1", "a2", "b1", "b2", "j"]
    view = inst.reordered(order)
    # prefixes of the new order carry 1, 11, 2, 11, 2 bytes; of the given order 1, 11, 20, 11, 2
    assert RangeModel(view).boundary[1:-1].tolist() == [1, 11, 2, 11, 2]
    assert RangeModel(inst).boundary[1:-1].tolist() == [1, 11, 20, 11, 2]


def test_local_cuts_where_only_the_low_alive_order_can() -> None:
    # By hand: one device takes 4 s. Two stages of 2 s each need the cut {x, a1, a2} (2 bytes,
    # 2 s) or {x, b1, b2}: not a prefix of the given order, whose cuts carry 11 or 20 bytes
    # (11 s, 20 s). So the range plans of the given order are at best 4 s, of the low-alive
    # order 2 s (the optimum: every split of the 4 s of work into 2 + 2 is one of those two).
    inst = two_branches()
    result = solve(inst, "local")
    assert result.objective_s == pytest.approx(2.0)
    assert result.extra["given_order"]["dp_start_s"] == pytest.approx(4.0)
    assert result.extra["low_alive_order"]["dp_start_s"] == pytest.approx(2.0)


def test_a_reordered_instance_is_the_same_problem() -> None:
    inst = two_branches()
    view = inst.reordered([0, 1, 3, 2, 4, 5])
    plan = solve(inst, "brute").plan
    assert plan is not None
    assert evaluate(view, plan) == evaluate(inst, plan)
    assert solve(view, "brute").objective_s == pytest.approx(solve(inst, "brute").objective_s)
    with pytest.raises(ValueError, match="topological"):
        inst.reordered([1, 0, 2, 3, 4, 5])  # a1 before x
    with pytest.raises(ValueError, match="permutation"):
        inst.reordered([0, 1, 2, 3, 4, 4])
