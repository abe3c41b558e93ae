"""The path formulation (formulations/paths.py) and its threshold search, against brute force.

The formulation is checked on its own with a real solver (HiGHS): the brute-force optimum is one
of its candidate periods, the model at that threshold is feasible and decodes to a plan no worse,
the model just below it is infeasible; the latency model's optimum is the brute-force optimum.
The driver is checked from a poor warm start (single devices only), where it must bisect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import random_instance, two_branches

from edgepart import (
    SolutionStatus,
    Termination,
    cuts,
    evaluate,
    load_instance,
    solve,
    validate_plan,
)
from edgepart.cuts import PeriodSearch
from edgepart.formulations import paths
from edgepart.formulations.paths import Inapplicable, PathFormulation
from edgepart.instance import Instance
from edgepart.results import OPTIMALITY_TOL
from edgepart.solvers import exact
from edgepart.solvers.base import SolveOptions
from edgepart.solvers.highs import run_highs

TINY = Path(__file__).resolve().parents[1] / "instances" / "tiny"
SUITE = TINY.parent

relay_or_chain = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6), "n": st.integers(2, 6), "nd": st.integers(1, 3),
    "chain": st.booleans(), "overlap": st.booleans(), "ends": st.booleans(),
    "memory": st.booleans(), "uniform_links": st.booleans()})


def build(p: dict[str, object]) -> Instance:
    seed = int(p["seed"])  # type: ignore[call-overload]
    transfer = "direct" if p["chain"] and seed % 2 else "relay"  # chains: either is exact
    return load_instance(random_instance(
        seed, n=p["n"], nd=p["nd"], chain=p["chain"], transfer=transfer,  # type: ignore[arg-type]
        overlap=p["overlap"], ends=p["ends"], memory=p["memory"],  # type: ignore[arg-type]
        uniform_links=p["uniform_links"], restrict=seed % 5 == 0,  # type: ignore[arg-type]
        colocate=seed % 7 == 0))


def feasible(form: PathFormulation, theta: float) -> float | None:
    """Period of the plan HiGHS finds at ``theta`` (checked valid), or None if infeasible."""
    pm = form.model(theta)
    if pm is None:
        return None
    res = run_highs(pm.model, SolveOptions())
    if res.termination is Termination.INFEASIBLE:
        return None
    assert res.values is not None, res.message
    plan = form.decode(pm, res.values)
    assert plan is not None and validate_plan(form.inst, plan) == []
    return evaluate(form.inst, plan).bottleneck_s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=relay_or_chain)
def test_threshold_models_bracket_the_brute_force_period(p: dict[str, object]) -> None:
    inst = build(p)
    ref = solve(inst, "brute")
    form = PathFormulation(inst)  # applies: relay transfers, or a chain
    values = form.period_values
    assert values is not None
    if ref.status is SolutionStatus.INFEASIBLE:
        assert feasible(form, float(values.max(initial=0.0))) is None
        return
    best = ref.objective_s
    at = values[values <= best * (1 + 1e-9)]
    assert at[-1] == pytest.approx(best, rel=1e-9)  # the optimum is a candidate
    found = feasible(form, float(at[-1]))
    assert found is not None and found <= best * (1 + 1e-9)
    below = values[values < best * (1 - 1e-9)]
    if len(below):
        assert feasible(form, float(below[-1])) is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=relay_or_chain)
def test_latency_model_optimum_is_the_brute_force_optimum(p: dict[str, object]) -> None:
    inst = build(p)
    ref = solve(inst, "brute", objective="latency")
    form = PathFormulation(inst, "latency")
    pm = form.model(None)
    if ref.status is SolutionStatus.INFEASIBLE:
        assert pm is None or run_highs(pm.model, SolveOptions()).termination is (
            Termination.INFEASIBLE)
        return
    assert pm is not None
    res = run_highs(pm.model, SolveOptions())
    assert res.values is not None
    plan = form.decode(pm, res.values)
    assert plan is not None
    assert evaluate(inst, plan).latency_s == pytest.approx(ref.objective_s, rel=1e-6)
    assert res.bound_s <= ref.objective_s * (1 + 1e-6)
    hint = form.hint(pm, plan)
    again = form.decode(pm, [hint.get(i, 0.0) for i in range(len(pm.model.vars))])
    assert again is not None and again.stage_of(inst) == plan.stage_of(inst)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=relay_or_chain, backend=st.sampled_from(["highs", "cbc"]))
def test_search_from_a_poor_warm_start_proves_the_optimum(p: dict[str, object],
                                                          backend: str) -> None:
    inst = build(p)
    ref = solve(inst, "brute")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(exact, "WARM_START_METHODS", ())  # single-device plans only
        result = solve(inst, backend, formulation="paths", time_limit=60)
    if ref.status is SolutionStatus.INFEASIBLE:  # possibly decided before any formulation
        assert result.status is SolutionStatus.INFEASIBLE
        return
    assert result.extra["formulation"] == "paths"
    assert result.status is SolutionStatus.OPTIMAL, result.message
    assert result.objective_s == pytest.approx(ref.objective_s, rel=1e-6)
    assert result.bound_s <= result.objective_s * (1 + 1e-12)
    assert result.gap <= OPTIMALITY_TOL


def test_the_search_bisects_and_counts_its_questions(
        monkeypatch: pytest.MonkeyPatch, leave_out_envelope: Callable[[], None]) -> None:
    inst = load_instance(SUITE / "vgg16_4nodes.json")
    monkeypatch.setattr(exact, "WARM_START_METHODS", ())
    # the envelope's witness would start the search at the optimum: left out
    leave_out_envelope()
    result = solve(inst, "highs", formulation="paths")
    expected = solve(inst, "cpsat", formulation="stages")
    assert result.status is SolutionStatus.OPTIMAL
    assert result.objective_s == pytest.approx(expected.objective_s, rel=1e-9)
    assert result.extra["feasibility_solves"] >= 2  # one improvement, then the proof


def test_direct_transfers_on_a_dag_are_refused_or_fall_back() -> None:
    inst = load_instance(TINY / "dag6_direct.json")
    with pytest.raises(Inapplicable, match="direct transfers on a DAG"):
        PathFormulation(inst)
    forced = solve(inst, "highs", formulation="paths")
    assert forced.termination is Termination.UNSUPPORTED and forced.plan is None
    assert "does not apply: direct transfers" in forced.message
    auto = solve(inst, "highs")
    assert auto.status is SolutionStatus.OPTIMAL
    assert auto.extra["formulation"] == "stages" and "direct" in auto.extra["paths_not_used"]


def test_too_many_arcs_or_candidates_fall_back_to_stages(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    inst = load_instance(TINY / "dag5_relay.json")
    expected = json.loads((TINY / "dag5_relay.optimum.json").read_text())["bottleneck"]
    monkeypatch.setattr(paths, "MAX_ARCS", 1)
    monkeypatch.setattr(exact, "period_search",  # the lattice search would answer first
                        lambda inst, upper, lower, deadline, **_: PeriodSearch(
                            None, lower, 0, "off"))
    monkeypatch.setattr(exact, "relaxed_search",  # and so would its relaxation
                        lambda inst, prices, upper, lower, deadline: PeriodSearch(
                            None, lower, 0, "off"))
    result = solve(inst, "highs")
    assert result.extra["formulation"] == "stages"
    assert "more than 1 stage arcs" in result.extra["paths_not_used"]
    assert result.objective_s == pytest.approx(expected, rel=1e-9)
    monkeypatch.setattr(paths, "MAX_ARCS", 10**6)
    monkeypatch.setattr(paths, "MAX_PERIOD_VALUES", 1)
    no_overlap = load_instance(random_instance(3, n=5, nd=3, overlap=False))
    result = solve(no_overlap, "highs")
    assert result.extra["formulation"] == "stages"
    assert "too many distinct stage times" in result.extra["paths_not_used"]


def test_the_formulation_option_is_validated() -> None:
    with pytest.raises(Exception, match="formulation: must be one of auto, stages, paths"):
        SolveOptions(formulation="columns")


def test_highs_on_paths_and_cpsat_on_stages_agree_on_resnet50() -> None:
    """Correctness on a profiled DAG (speed is for bench/solve_times.py): HiGHS on paths and
    CP-SAT on stage slots prove the same optimum."""
    inst = load_instance(SUITE / "resnet50_8nodes.json")
    highs = solve(inst, "highs", time_limit=120, formulation="paths")
    cpsat = solve(inst, "cpsat", time_limit=120)
    assert highs.extra["formulation"] == "paths"
    assert highs.status is SolutionStatus.OPTIMAL and cpsat.status is SolutionStatus.OPTIMAL
    assert highs.objective_s == pytest.approx(cpsat.objective_s, rel=1e-6)


# -- the first stage's lower bound on the period (edgepart.cuts.first_stages_bound) ------------


def two_layer_chain() -> Instance:
    """a -> b; devices A (the source) and B; one link, 10 B/s, no latency; input 100 B, a's
    output 10 B, no sink. a takes 1 s on A and on B; b takes 10 s on A and 3 s on B."""
    layer = {"op": "op", "flops": 1.0, "param_bytes": 0.0, "work_bytes": 0.0}
    return load_instance({
        "format_version": 1, "name": "first_stages", "model": {
            "name": "chain", "input_bytes": 100.0, "edges": [{"src": "a", "dst": "b"}],
            "layers": [
                {**layer, "id": "a", "output_bytes": 10.0, "time_s": {"A": 1.0, "B": 1.0}},
                {**layer, "id": "b", "output_bytes": 10.0, "time_s": {"A": 10.0, "B": 3.0}}]},
        "devices": [{"id": "A", "class": "A", "memory_bytes": 1e12, "flops_per_s": 1.0},
                    {"id": "B", "class": "B", "memory_bytes": 1e12, "flops_per_s": 1.0}],
        "links": {"default": {"bandwidth_bytes_per_s": 10.0, "latency_s": 0.0}},
        "cost_model": {"overlap": True, "transfer": "relay"}, "source": "A"})


def test_first_stages_bound_by_hand() -> None:
    """Stage 0 on B pays the input, 100 B / 10 B/s = 10 s. Stage 0 on A: {a, b} computes 11 s;
    {a} computes 1 s and sends 10 B in 1 s, then stage 1 must be on B: {b} computes 3 s, so 3.
    Bound min(10, 11, 3) = 3, and a plan has it (a on A, b on B: stages of 1 s and 3 s); every
    other plan is 10 or 11. The first stage alone would give only max(0, 1, 1) = 1, which is what
    the bound falls back to when it may visit no ideal (A: its input is free and a layer takes at
    least 1 s there; B: the input alone is 10 s)."""
    inst = two_layer_chain()
    assert cuts.first_stages_bound(inst, math.inf) == pytest.approx(3.0)
    assert solve(inst, "brute").objective_s == pytest.approx(3.0)
    assert cuts.first_stages_bound(inst, math.inf, max_sets=0) == pytest.approx(1.0)
    assert cuts.first_stages_bound(inst, 2.0) == 2.0  # nothing beats the cap: the cap


@pytest.mark.parametrize("backend", ["cpsat", "highs", "cbc"])
def test_stage_slots_call_no_solver_when_the_warm_start_meets_the_first_stages_bound(
        backend: str) -> None:
    """On :func:`two_layer_chain` the bound is the optimum, 3 (above), and the warm start finds
    that plan, so the stage-slot driver proves it without a solver."""
    result = solve(two_layer_chain(), backend, formulation="stages")
    assert result.status is SolutionStatus.OPTIMAL
    assert result.objective_s == pytest.approx(3.0)
    assert result.solver_version == "no solver call: the first-stages bound meets the warm start"


def test_first_stages_bound_keeps_the_source_and_the_sink_apart() -> None:
    """One layer a (1 s everywhere) on two otherwise identical devices, A the source and B the
    sink, one link of 10 B/s; input 10 B, output 100 B. a on A: its output costs 100 / 10 = 10 s
    to the sink, period 10; a on B: the input costs 1 s and the output is already there, period
    1. Bound min(10, 1) = 1 = the optimum; A and B must not count as one kind of device."""
    inst = load_instance({
        "format_version": 1, "name": "ends", "model": {
            "name": "one", "input_bytes": 10.0, "edges": [],
            "layers": [{"id": "a", "op": "op", "flops": 1.0, "param_bytes": 0.0,
                        "work_bytes": 0.0, "output_bytes": 100.0, "time_s": {"X": 1.0}}]},
        "devices": [{"id": "A", "class": "X", "memory_bytes": 1e12, "flops_per_s": 1.0},
                    {"id": "B", "class": "X", "memory_bytes": 1e12, "flops_per_s": 1.0}],
        "links": {"default": {"bandwidth_bytes_per_s": 10.0, "latency_s": 0.0}},
        "cost_model": {"overlap": True, "transfer": "relay"}, "source": "A", "sink": "B"})
    assert solve(inst, "brute").objective_s == pytest.approx(1.0)
    assert cuts.first_stages_bound(inst, math.inf) == pytest.approx(1.0)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 4),
       shape=st.sampled_from(["chain", "forward", "dag"]), ends=st.sampled_from(
           [True, False, "source", "sink"]), overlap=st.booleans(), max_sets=st.sampled_from(
           [cuts.FIRST_STAGE_SETS, 2]))
def test_first_stages_bound_is_below_the_brute_force_optimum(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool,
        max_sets: int) -> None:
    """Relay instances with per-class times, memory limits and pinned layers; ``max_sets=2``
    makes the enumeration give up early (its fallback must stay a bound too)."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, memory=True, restrict=1,
                                         uniform_links=seed % 2 == 0))
    best = solve(inst, "brute")
    bound = cuts.first_stages_bound(inst, math.inf, max_sets=max_sets)
    assert bound <= best.objective_s * (1 + 1e-12)  # an infeasible instance: inf


# -- the lattice threshold search (edgepart.cuts.period_search) -------------------------------


def test_period_search_by_hand() -> None:
    """:func:`two_layer_chain` has the optimum 3 (derived above: a on A, b on B). From no
    incumbent the search finds a plan of period 3 and proves that no plan beats it; with the
    incumbent 3 given it proves 3 with one question ("no plan at 3 (1 - 1e-7)")."""
    inst = two_layer_chain()
    found = cuts.period_search(inst, math.inf, 0.0)
    assert found.plan is not None and evaluate(inst, found.plan).bottleneck_s == pytest.approx(3.0)
    assert 3.0 * (1 - 1e-6) <= found.bound <= 3.0
    proof = cuts.period_search(inst, 3.0, 0.0)
    assert proof.plan is None and proof.questions == 1 and proof.bound >= 3.0 * (1 - 1e-6)


def test_period_search_asks_at_a_tight_floor_first() -> None:
    """:func:`two_layer_chain` (optimum 3) with ``floor_first``: told a bound just below 3, the
    first question, just above it, finds the 3 s plan and proves it (one question); told a weak
    bound (1), that question says "no" and the search goes on to the same proof."""
    inst = two_layer_chain()
    tight = cuts.period_search(inst, math.inf, 3.0 * (1 - 1e-9), floor_first=True)
    assert tight.questions == 1 and tight.plan is not None
    assert evaluate(inst, tight.plan).bottleneck_s == pytest.approx(3.0)
    weak = cuts.period_search(inst, math.inf, 1.0, floor_first=True)
    assert weak.plan is not None and evaluate(inst, weak.plan).bottleneck_s == pytest.approx(3.0)
    assert 3.0 * (1 - 1e-6) <= weak.bound <= 3.0 and weak.questions >= 2


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 4),
       shape=st.sampled_from(["chain", "forward", "dag"]), ends=st.sampled_from(
           [True, False, "source", "sink"]), overlap=st.booleans(), memory=st.booleans())
def test_period_search_finds_the_brute_force_optimum(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool,
        memory: bool) -> None:
    """Relay instances with per-class times, pinned layers, colocation and (drawn) memory
    limits: the bound never exceeds the brute-force optimum; without memory limits (which the
    sweep does not check) the search ends with the optimum and a bound that meets it."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, memory=memory, restrict=1,
                                         colocate=seed % 3 == 0,
                                         uniform_links=seed % 2 == 0))
    best = solve(inst, "brute")
    optimum = math.inf if best.objective_s is None else best.objective_s
    found = cuts.period_search(inst, math.inf, 0.0)
    assert found.bound <= optimum * (1 + 1e-12)
    if found.plan is not None:
        assert validate_plan(inst, found.plan) == []
    if not memory:
        assert found.stopped == ""
        if math.isinf(optimum):
            assert found.plan is None
        else:
            assert found.plan is not None
            value = evaluate(inst, found.plan).bottleneck_s
            assert value == pytest.approx(optimum, rel=1e-9)
            assert found.bound >= optimum * (1 - 1e-6)


# -- the range search (edgepart.cuts.range_search): the same sweep on the prefixes of an order ---


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 4),
       shape=st.sampled_from(["chain", "forward", "dag"]), ends=st.sampled_from(
           [True, False, "source", "sink"]), overlap=st.booleans())
def test_range_search_finds_the_best_range_plan_of_the_order(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool) -> None:
    """The best range plan of an order is what the exact range DP (``dp``, pairs of prefixes)
    finds on the instance listed in that order: for the given order and the low-alive one.
    Relay, no memory limits (which the sweep does not check), pinned layers, colocation."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, restrict=1, colocate=seed % 3 == 0,
                                         uniform_links=seed % 2 == 0))
    for order in (list(range(n)), list(cuts.low_alive_order(inst))):
        ranges = solve(inst.reordered(order), "dp")
        plan = cuts.range_search(inst, order, math.inf, 0.0)
        if not ranges.has_plan:
            assert plan is None
            continue
        assert plan is not None and validate_plan(inst, plan) == []
        assert evaluate(inst, plan).bottleneck_s == pytest.approx(ranges.objective_s, rel=1e-6)
        best = solve(inst, "brute").objective_s
        assert evaluate(inst, plan).bottleneck_s >= best * (1 - 1e-12)


def test_range_search_cuts_only_prefixes() -> None:
    """:func:`strategies.two_branches` by hand (x feeds a1 -> a2 and b1 -> b2 that
    meet at j; 1 s per branch layer on either of two devices, tensors a1, b1 10 bytes, the rest
    1, links 1 byte/s): every cut of the given order x, a1, b1, a2, b2, j carries 11 or 20
    bytes, so its best range plan is one device, 4 s; the order x, a1, a2, b1, b2, j cuts after
    a2 with 2 bytes: 2 s (the optimum)."""
    inst = two_branches()
    given = cuts.range_search(inst, range(6), math.inf, 0.0)
    assert given is not None and evaluate(inst, given).bottleneck_s == pytest.approx(4.0)
    low = cuts.range_search(inst, [0, 1, 3, 2, 4, 5], math.inf, 0.0)
    assert low is not None and evaluate(inst, low).bottleneck_s == pytest.approx(2.0)
    assert cuts.range_search(inst, range(6), 4.0, 0.0) is None  # nothing beats 4 s


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(2, 6), nd=st.integers(4, 7),
       overlap=st.booleans())
def test_period_search_with_several_devices_per_type(seed: int, n: int, nd: int,
                                                     overlap: bool) -> None:
    """Uniform links and no source or sink, so devices of a class merge into types of several
    devices each: the used multiset is a number of several digits (the sweep shifts along one
    digit per opened stage). The optimum is the exact DP over ideals' (dp_ideals, its own code
    and state layout)."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, ends=False, uniform_links=True,
                                         overlap=overlap, classes=2 + seed % 2))
    reference = solve(inst, "dp_ideals")
    found = cuts.period_search(inst, math.inf, 0.0)
    assert found.stopped == ""
    if not reference.has_plan:
        assert found.plan is None
        return
    assert found.plan is not None
    assert evaluate(inst, found.plan).bottleneck_s == pytest.approx(reference.objective_s,
                                                                    rel=1e-9)
    assert reference.objective_s * (1 - 1e-6) <= found.bound <= reference.objective_s * (
        1 + 1e-12)
