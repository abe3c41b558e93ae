"""The exact DPs against brute force (and CP-SAT): equal on chains (range DP) and on DAGs with
relay transfers (ideal DP), under both transfer models, with and without overlap, for both
objectives; honest statuses elsewhere; clear refusals."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import cost_models, random_instance

from edgepart import SolutionStatus, Termination, load_instance, solve, validate_plan
from edgepart.cuts import DeviceTypes, ideal_family, prefix_family
from edgepart.instance import Instance
from edgepart.results import OPTIMALITY_TOL, SolveResult

TINY = Path(__file__).resolve().parents[1] / "instances" / "tiny"

small = st.fixed_dictionaries({
    "seed": st.integers(0, 10**6), "n": st.integers(1, 5), "nd": st.integers(1, 3),
    "memory": st.booleans(), "restrict": st.booleans(), "colocate": st.booleans(),
    "ends": st.booleans(), "uniform_links": st.booleans()})


def build(params: dict[str, Any], chain: bool, model: tuple[str, bool]) -> Instance:
    return load_instance(random_instance(**params, chain=chain, transfer=model[0],
                                         overlap=model[1]))


def check_exact(inst: Instance, result: SolveResult, brute: SolveResult) -> None:
    if brute.status is SolutionStatus.INFEASIBLE:
        assert result.status is SolutionStatus.INFEASIBLE
        assert result.termination is Termination.INFEASIBLE
        return
    assert result.status is SolutionStatus.OPTIMAL, result.message
    assert result.objective_s == pytest.approx(brute.objective_s, rel=1e-9)
    assert result.bound_s <= result.objective_s * (1 + OPTIMALITY_TOL)
    assert result.plan is not None and validate_plan(inst, result.plan) == []


@settings(max_examples=100, deadline=None)
@given(small, cost_models, st.sampled_from(["bottleneck", "latency"]))
def test_range_dp_is_brute_force_on_chains(params: dict[str, Any], model: tuple[str, bool],
                                           objective: str) -> None:
    inst = build(params, True, model)
    check_exact(inst, solve(inst, "dp", objective=objective),
                solve(inst, "brute", objective=objective))


@settings(max_examples=100, deadline=None)
@given(small, st.booleans(), st.sampled_from(["bottleneck", "latency"]))
def test_ideal_dp_is_brute_force_on_relay_dags(params: dict[str, Any], overlap: bool,
                                               objective: str) -> None:
    inst = build(params, False, ("relay", overlap))
    check_exact(inst, solve(inst, "dp_ideals", objective=objective),
                solve(inst, "brute", objective=objective))


@settings(max_examples=60, deadline=None)
@given(small, cost_models)
def test_dps_never_beat_brute_force_and_claim_only_what_they_prove(
        params: dict[str, Any], model: tuple[str, bool]) -> None:
    inst = build(params, False, model)
    brute = solve(inst, "brute")
    for method in ("dp", "dp_ideals"):
        result = solve(inst, method)
        if result.plan is None:
            continue
        assert validate_plan(inst, result.plan) == []
        assert result.objective_s >= brute.objective_s * (1 - 1e-9)
        exact = inst.model.is_chain or (method == "dp_ideals" and model[0] == "relay")
        if not exact:
            assert result.termination is Termination.FINISHED
            assert result.bound_s == -math.inf


@settings(max_examples=15, deadline=None)
@given(small, cost_models)
def test_range_dp_equals_cpsat_on_chains(params: dict[str, Any], model: tuple[str, bool]) -> None:
    inst = build(params, True, model)
    dp, cpsat = solve(inst, "dp"), solve(inst, "cpsat", time_limit=20)
    assert dp.has_plan == cpsat.has_plan
    if dp.has_plan:
        assert cpsat.termination is Termination.OPTIMAL, cpsat.message
        assert dp.objective_s == pytest.approx(cpsat.objective_s, rel=1e-6)


def tiny_cases() -> list[tuple[str, str]]:
    names = sorted(p.name.removesuffix(".json") for p in TINY.glob("*.json")
                   if not p.name.endswith(".optimum.json"))
    return [(n, o) for n in names for o in ("bottleneck", "latency")]


@pytest.mark.parametrize(("name", "objective"), tiny_cases())
def test_known_answers_where_exact(name: str, objective: str) -> None:
    inst = load_instance(TINY / f"{name}.json")
    expected = json.loads((TINY / f"{name}.optimum.json").read_text())[objective]
    methods = ["dp"] if inst.model.is_chain else []
    if inst.model.is_chain or inst.cost_model.transfer.value == "relay":
        methods.append("dp_ideals")
    for method in methods:
        result = solve(inst, method, objective=objective)
        if expected == "infeasible":
            assert result.status is SolutionStatus.INFEASIBLE, method
        else:
            assert result.status is SolutionStatus.OPTIMAL, (method, result.message)
            assert result.objective_s == pytest.approx(expected, rel=1e-9), method


def test_non_overlap_bisection_proves_a_tight_bound() -> None:
    inst = load_instance(random_instance(7, n=40, nd=4, chain=True, overlap=False))
    result = solve(inst, "dp")
    assert result.status is SolutionStatus.OPTIMAL
    assert result.extra["passes"] > 1
    assert result.objective_s - result.bound_s <= 1e-7 * result.objective_s


def test_identical_devices_merge_into_types_and_asymmetric_links_split_them() -> None:
    data = random_instance(3, n=4, nd=4, uniform_links=True, ends=False)
    for d in data["devices"]:
        d.update({"class": "a", "flops_per_s": 1e7, "memory_bytes": 1e12})
    inst = load_instance(data)
    assert DeviceTypes.of(inst, range(4)).members == ((0, 1, 2, 3),)
    data["links"]["pairs"] = [{"src": "d0", "dst": "d1", "bandwidth_bytes_per_s": 1.0,
                               "latency_s": 0.0}]
    split = DeviceTypes.of(load_instance(data), range(4))
    assert {(0,), (1,)} <= set(split.members)
    assert sorted(d for m in split.members for d in m) == [0, 1, 2, 3]


def test_families_respect_colocation_and_predecessors() -> None:
    data = random_instance(5, n=5, nd=2, colocate=True)
    inst = load_instance(data)
    group = [inst.model.index[x] for x in data["model"]["colocate"][0]]
    fam = ideal_family(inst)
    assert fam is not None
    for row in fam.sets:
        assert len({bool(row[v]) for v in group}) == 1
        for v in map(int, row.nonzero()[0]):
            assert all(row[u] for u in inst.model.pred[v])
    assert prefix_family(inst).size == len(inst.model.layers) + 1 - (max(group) - min(group))


def test_wide_graphs_and_bicriteria_requests_are_refused_with_a_reason() -> None:
    layers = [{"id": f"l{v}", "op": "op", "flops": 1e6, "param_bytes": 0, "output_bytes": 1e3}
              for v in range(16)]
    data = random_instance(1, n=2, nd=2)
    data["model"]["layers"] = layers
    data["model"]["edges"] = [{"src": "l0", "dst": f"l{v}"} for v in range(1, 16)]
    result = solve(load_instance(data), "dp_ideals")
    assert result.termination is Termination.UNSUPPORTED
    assert "ideals" in result.message
    result = solve(load_instance(random_instance(1, overlap=False)), "dp", max_latency=1.0)
    assert result.termination is Termination.UNSUPPORTED
    assert "couples neighbouring stages" in result.message


@pytest.mark.parametrize("seed", range(40))
def test_a_latency_cap_on_the_period_matches_brute_force(seed: int) -> None:
    """With overlap the DP bisects the period over capped latency passes (dp._latency_capped);
    the cap is drawn at 1.0, 1.05 and 1.3 times the least latency, so it binds."""
    rng = random.Random(seed)
    nd = rng.randint(1, 4)
    inst = load_instance(random_instance(seed, n=rng.randint(2, 5 if nd == 4 else 6), nd=nd,
                                         overlap=True, memory=seed % 3 == 0,
                                         ends=rng.choice([True, False, "source", "sink"])))
    fastest = solve(inst, "brute", objective="latency")
    if not fastest.has_plan:
        pytest.skip("no plan at all")
    cap = fastest.objective_s * (1.0, 1.05, 1.3)[seed % 3]
    ref = solve(inst, "brute", max_latency=cap)
    result = solve(inst, "dp_ideals", max_latency=cap)
    assert result.status is SolutionStatus.OPTIMAL, result.message
    assert result.objective_s == pytest.approx(ref.objective_s, rel=1e-6)
    assert result.metrics is not None and result.metrics.latency_s <= cap * (1 + 1e-9)


def test_time_limit_stops_the_dp() -> None:
    inst = load_instance(random_instance(2, n=150, nd=8, chain=True, overlap=False))
    result = solve(inst, "dp", time_limit=0.05)
    assert result.termination is Termination.TIME_LIMIT


SUITE = Path(__file__).resolve().parents[1] / "instances"


@pytest.mark.skipif(not (SUITE / "mobilenet_v2_4nodes.json").exists(),
                    reason="profiled suite not generated")
def test_ideal_dp_equals_cpsat_on_a_profiled_dag() -> None:
    inst = load_instance(SUITE / "mobilenet_v2_4nodes.json")
    ideals, cpsat = solve(inst, "dp_ideals"), solve(inst, "cpsat", time_limit=60)
    assert ideals.status is SolutionStatus.OPTIMAL
    assert cpsat.termination is Termination.OPTIMAL
    assert ideals.objective_s == pytest.approx(cpsat.objective_s, rel=1e-6)
