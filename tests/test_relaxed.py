"""The lattice sweep with device counts relaxed (:func:`edgepart.cuts.relaxed_search`): its bound
never passes the optimum, whatever the prices and the room for counters, and it sees what the
fractional work bound cannot (a boundary every plan pays, stages that must stay contiguous)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import random_instance

from edgepart import evaluate, load_instance, solve, validate_plan
from edgepart.bounds import device_prices, work_bound
from edgepart.cuts import DeviceTypes, PeriodSearch, relaxed_search
from edgepart.instance import Instance
from edgepart.results import SolutionStatus, Termination
from edgepart.solvers import exact


def chain_instance(times: dict[str, list[float]], out_bytes: list[float],
                   devices: dict[str, int], bandwidth: float) -> Instance:
    """A chain of layers l0 -> l1 -> ... with ``times[cls][v]`` seconds; ``devices[cls]``
    devices of each class; one link for every pair (``bandwidth`` B/s, no latency); no source
    or sink, overlap."""
    n = len(out_bytes)
    layer = {"op": "op", "flops": 1.0, "param_bytes": 0.0, "work_bytes": 0.0}
    return load_instance({
        "format_version": 1, "name": "hand", "model": {
            "name": "chain", "input_bytes": 1.0,
            "edges": [{"src": f"l{v}", "dst": f"l{v + 1}"} for v in range(n - 1)],
            "layers": [{**layer, "id": f"l{v}", "output_bytes": out_bytes[v],
                        "time_s": {c: t[v] for c, t in times.items()}} for v in range(n)]},
        "devices": [{"id": f"{c}{k}", "class": c, "memory_bytes": 1e12, "flops_per_s": 1.0}
                    for c, count in devices.items() for k in range(count)],
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth, "latency_s": 0.0}},
        "cost_model": {"overlap": True, "transfer": "relay"}})


def test_with_no_counters_a_boundary_every_plan_pays_is_seen() -> None:
    """l0 -> l1 -> l2, 1 s each on two identical devices; l0's tensor 50 B, l1's 1 B, links
    1 B/s. One device: 3 s. Cutting after l0 costs a 50 s transfer; after l1, max(2, 1, 1 s) =
    2 s: the optimum. The work bound is 3 s / 2 devices = 1.5 s. With room for no counter at all
    (four ideals, ``max_cells`` 4: one state each) the sweep lets every stage have a device of
    its own, and still every plan below 2 s would need a stage of one layer next to a 50 s
    boundary: it proves 2 s in one question."""
    inst = chain_instance({"A": [1.0, 1.0, 1.0]}, [50.0, 1.0, 1.0], {"A": 2}, 1.0)
    assert solve(inst, "brute").objective_s == pytest.approx(2.0)
    assert work_bound(inst) == pytest.approx(1.5)
    found = relaxed_search(inst, [0.5, 0.5], 2.0, 1.5, max_cells=4)
    assert found.questions == 1 and found.plan is None
    assert 2.0 * (1 - 1e-6) <= found.bound <= 2.0


def test_a_priced_counter_keeps_the_fast_device_scarce() -> None:
    """l0 -> l1 -> l2 on one fast device F (1, 3, 1 s) and one slow device S (3, 1, 3 s), free
    links. A real plan has at most two stages (two devices): all on F 5 s, all on S 7 s, and
    every two-stage plan 4 s (F{l0} S{l1, l2}: max(1, 4); F{l0, l1} S{l2}: max(4, 3); the
    mirrors alike): optimum 4. The work bound: y_F = y, y_S = 1 - y, layers min(y, 3 - 3y) twice
    and min(3y, 1 - y): 1 + y on [1/4, 3/4], so 1.75 at y = 3/4. Four ideals (a chain of three), two
    types, so ``max_cells`` 8 leaves one state: no counter, and the chain F, S, F
    (1 s each; never F twice in a row, F has one device) meets 1 s. ``max_cells`` 32: four
    states, one priced counter (an exact one for F would need 2 x 5), weights floor(3 y) =
    (2, 0), cap 2: F, S, F costs 4 and is out, but S, F, S costs 2 and meets 3 s. ``max_cells``
    40: five states, weights floor(4 y) = (3, 1), cap 4: both three-stage chains cost 7 or 5,
    so only plans of two stages are left, and the bound is the optimum, 4 s."""
    inst = chain_instance({"F": [1.0, 3.0, 1.0], "S": [3.0, 1.0, 3.0]}, [1.0, 1.0, 1.0],
                          {"F": 1, "S": 1}, 1e12)
    assert solve(inst, "brute").objective_s == pytest.approx(4.0)
    assert work_bound(inst) == pytest.approx(1.75)
    prices = device_prices(inst)
    assert prices is not None and prices == pytest.approx([0.75, 0.25])
    for cells, relaxed_optimum in ((8, 1.0), (32, 3.0), (40, 4.0)):
        found = relaxed_search(inst, prices, 4.0, 0.0, max_cells=cells)
        assert relaxed_optimum * (1 - 2e-3) <= found.bound <= relaxed_optimum * (1 + 1e-9)


def test_the_counters_shift_by_their_weights() -> None:
    """The vectorised step of a stage (slices along each digit) against a loop over the
    states: state s holds counter j's value (s // stride_j) % (cap_j + 1); a stage of type t
    adds weight (j, t) to each, and lands only where every counter stays within its cap."""
    from edgepart.cuts import _Counters  # the sweep's state layout, checked on its own

    rng = np.random.default_rng(7)
    for weights, caps in (([[1, 0, 0], [0, 1, 0]], [2, 3]), ([[2, 1, 0], [0, 3, 1]], [4, 5]),
                          ([[0, 2, 5]], [7]), (np.zeros((0, 3), dtype=int), [])):
        counters = _Counters(np.array(weights, dtype=np.int64).reshape(len(caps), 3),
                             np.array(caps, dtype=np.int64))
        size = math.prod(c + 1 for c in caps)
        value = rng.random((2, size, 3))
        got = counters.open(np.full((2, size, 3), np.inf), value)
        want = np.full((2, size, 3), np.inf)
        for s, t in itertools.product(range(size), range(3)):
            digits = [(s // math.prod(c + 1 for c in caps[:j])) % (caps[j] + 1)
                      for j in range(len(caps))]
            moved = [d + counters.weights[j, t] for j, d in enumerate(digits)]
            if all(m <= c for m, c in zip(moved, caps, strict=True)):
                to = sum(m * math.prod(c + 1 for c in caps[:j]) for j, m in enumerate(moved))
                want[:, to, t] = np.minimum(want[:, to, t], value[:, s, t])
        np.testing.assert_array_equal(got, want)


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 6),
       shape=st.sampled_from(["chain", "forward", "dag"]), ends=st.sampled_from(
           [True, False, "source", "sink"]), overlap=st.booleans(), memory=st.booleans(),
       cells=st.sampled_from([1, 40, 400, 10**7]), lp_prices=st.booleans())
@example(seed=0, n=5, nd=6, shape="chain", ends=True, overlap=False, memory=False, cells=40,
         lp_prices=False)  # brute force refuses (2.6 million plans): the DP's optimum, 5.371 s
def test_the_relaxed_bound_never_passes_the_optimum(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool, memory: bool,
        cells: int, lp_prices: bool) -> None:
    """Relay instances with per-class times, pinned layers, colocation, memory limits (drawn),
    several devices per type (uniform links, drawn): whatever the prices (the work bound's or
    random) and the room for counters (none, some priced, every type exact), the bound is at most
    the optimum (brute force, or the exact DP where brute force would try too many plans), and a
    plan it returns is a valid plan. With room for every type's exact counter and no memory
    limits, asked just below the optimum it proves it."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, memory=memory, restrict=1,
                                         colocate=seed % 3 == 0,
                                         uniform_links=seed % 2 == 0))
    optimum = exact_optimum(inst)
    rng = random.Random(seed)
    prices = device_prices(inst) if lp_prices else None
    if prices is None:
        prices = np.array([rng.random() for _ in inst.devices])
    found = relaxed_search(inst, prices, math.inf, 0.0, max_cells=cells)
    assert found.bound <= optimum * (1 + 1e-12)
    if found.plan is not None:
        assert validate_plan(inst, found.plan) == []
        assert evaluate(inst, found.plan).bottleneck_s >= optimum * (1 - 1e-12)
    if not memory and math.isfinite(optimum) and cells == 10**7:
        types = DeviceTypes.of(inst, range(len(inst.devices)))
        assert types.n_states * types.n_types <= 10**5  # every type gets an exact counter
        proof = relaxed_search(inst, prices, optimum, 0.0, max_cells=cells)
        assert proof.bound >= optimum * (1 - 1e-6)


def exact_optimum(inst: Instance) -> float:
    """Brute force's optimum (``inf``: proven infeasible), or the exact DP over ideals' where
    brute force would try too many plans (six devices on five layers: about 2.6 million)."""
    for method in ("brute", "dp_ideals"):
        result = solve(inst, method)
        if result.termination is Termination.INFEASIBLE:
            return math.inf
        if result.termination is Termination.OPTIMAL:
            return float(result.objective_s)
    raise AssertionError(f"no exact reference: {result.message}")


def test_the_exact_driver_proves_with_the_relaxation_where_the_lattice_stops(
        monkeypatch: pytest.MonkeyPatch, leave_out_envelope: Callable[[], None]) -> None:
    """The first hand instance above (optimum 2 s; the work bound 1.5 s): with the exact
    lattice search refusing for its device states, the relaxed search proves the warm start's
    2 s, so HiGHS is never called (backend ``lattice``). Refusing for its ideals instead, the
    relaxation is not asked and HiGHS proves it. (The envelope bound, which would prove the
    2 s first here: the boundary after the first layer takes 50 s, so below 50 s the only split
    is after the second layer, 2 s of compute, is left out: this test is about the searches.)"""
    inst = chain_instance({"A": [1.0, 1.0, 1.0]}, [50.0, 1.0, 1.0], {"A": 2}, 1.0)
    leave_out_envelope()
    monkeypatch.setattr(exact, "period_search", lambda inst, upper, lower, deadline, **_: (
        PeriodSearch(None, lower, 0, "many states per ideal", device_states=True)))
    result = solve(inst, "highs", time_limit=30)
    assert result.status is SolutionStatus.OPTIMAL
    assert result.objective_s == pytest.approx(2.0)
    assert result.extra["backend"] == "lattice"
    assert result.extra["lattice"]["relaxed"]["questions"] >= 1
    monkeypatch.setattr(exact, "period_search", lambda inst, upper, lower, deadline, **_: (
        PeriodSearch(None, lower, 0, "more than 1 ideals")))
    result = solve(inst, "highs", time_limit=30)
    assert result.status is SolutionStatus.OPTIMAL and result.extra["backend"] == "highs"
    assert "relaxed" not in result.extra["lattice"]
