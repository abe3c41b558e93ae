"""The envelope bound (:func:`edgepart.bounds.envelope_bound`): exact on a chain's compute, never
above the optimum on any instance shape or layer order, and what it adds to the exact driver."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import random_instance
from test_relaxed import chain_instance, exact_optimum

from edgepart import load_instance, solve
from edgepart.bounds import ENVELOPE_PRECISION, envelope_bound, work_bound
from edgepart.instance import Instance


def test_on_a_chain_it_is_the_best_contiguous_split() -> None:
    """l0 -> l1 -> l2 on one device A (1, 5, 1 s) and one device B (5, 1, 5 s), transfers free
    (1 B tensors on 1e12 B/s links). One device: A 7 s, B 11 s. Two stages, each split:
    A[l0] B[l1 l2] max(1, 6) = 6; A[l0 l1] B[l2] max(6, 5) = 6; B[l0] A[l1 l2] max(5, 6) = 6;
    B[l0 l1] A[l2] max(6, 1) = 6: the optimum is 6 s. The work bound lets A do l0, l2 and B
    l1, then balances by moving a share x of A's layers to B: 2 - x = 1 + 5x, x = 1/6, 11/6 s.
    On a chain every ideal is a prefix (L_p = U_p), so the envelope is the exact compute DP."""
    inst = chain_instance({"A": [1.0, 5.0, 1.0], "B": [5.0, 1.0, 5.0]}, [1.0, 1.0, 1.0],
                          {"A": 1, "B": 1}, 1e12)
    assert solve(inst, "brute").objective_s == pytest.approx(6.0)
    assert work_bound(inst) == pytest.approx(11 / 6)
    assert 6.0 * (1 - 2 * ENVELOPE_PRECISION) <= envelope_bound(inst) <= 6.0


def diamond(times: dict[str, list[float]]) -> Instance:
    """a -> {b, c} -> d (listed a, b, c, d); one device per class; free transfers."""
    layer = {"op": "op", "flops": 1.0, "param_bytes": 0.0, "work_bytes": 0.0,
             "output_bytes": 1.0}
    return load_instance({
        "format_version": 1, "name": "diamond", "model": {
            "name": "diamond", "input_bytes": 1.0,
            "edges": [{"src": s, "dst": d} for s, d in
                      (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
            "layers": [{**layer, "id": v, "time_s": {c: t[k] for c, t in times.items()}}
                       for k, v in enumerate("abcd")]},
        "devices": [{"id": c, "class": c, "memory_bytes": 1e12, "flops_per_s": 1.0}
                    for c in times],
        "links": {"default": {"bandwidth_bytes_per_s": 1e12, "latency_s": 0.0}},
        "cost_model": {"overlap": True, "transfer": "relay"}})


def test_on_a_diamond_it_sees_what_the_work_bound_cannot() -> None:
    """a -> {b, c} -> d on one device A (1, 4, 0, 1 s) and one B (0, 0, 4, 4 s), free
    transfers. Ideals {a}, {a,b}, {a,c}, {a,b,c} as the first stage, either device first:
    {a}: A 8, B 5; {a,b}: A max(5, 8) = 8, B max(0, 1) = 1; {a,c}: A 4, B 5; {a,b,c}: A 5,
    B 4; one device: 6 or 8. The optimum is 1 s (B does a, b; A does c, d). The work bound
    gives a, b to B and c, d to A (0 s and 1 s), then moves a share x of d to B:
    1 - x = 4x, 0.8 s. The envelope in the order a, b, c, d (signatures p = 0..4 with
    U_1 = {a, c}, U_2 = {a, b}, U_3 = {a, b, c}): below 1 s a first stage on B reaches p <= 2
    (W_B(L_p) = 0), so M_A = W_A({a, b}) = 5 and A finishes 6 - 5 = 1 s: not met; a first
    stage on A reaches only p = 0, and B then needs 8 s. At 1 s it is met: the bound is 1 s."""
    inst = diamond({"A": [1.0, 4.0, 0.0, 1.0], "B": [0.0, 0.0, 4.0, 4.0]})
    assert solve(inst, "brute").objective_s == pytest.approx(1.0)
    assert work_bound(inst) == pytest.approx(0.8)
    assert 1.0 * (1 - 2 * ENVELOPE_PRECISION) <= envelope_bound(inst) <= 1.0


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 5),
       shape=st.sampled_from(["chain", "forward", "dag"]),
       ends=st.sampled_from([True, False, "source", "sink"]), overlap=st.booleans(),
       transfer=st.sampled_from(["relay", "direct"]), memory=st.booleans(),
       shuffle=st.booleans())
def test_the_envelope_never_passes_the_optimum(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool, transfer: str,
        memory: bool, shuffle: bool) -> None:
    """Per-class times that disagree, several entries and exits, pinned layers (their other
    types count 0 s), colocation, memory limits, both transfer models and overlap options, and
    the listed order or a random topological one: the bound is at most the optimum (brute
    force, or the exact DP over ideals where brute force would try too many plans)."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, transfer=transfer, memory=memory,
                                         restrict=seed % 3, colocate=seed % 4 == 0))
    order = random_topological_order(inst, random.Random(seed)) if shuffle else None
    assert envelope_bound(inst, order) <= exact_optimum(inst) * (1 + 1e-12)


def random_topological_order(inst: Instance, rng: random.Random) -> list[int]:
    """Kahn's algorithm taking a random ready layer each time."""
    indegree = [len(p) for p in inst.model.pred]
    ready = [v for v, d in enumerate(indegree) if d == 0]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in inst.model.succ[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    return order


def test_the_exact_driver_floors_with_it() -> None:
    """The chain above through HiGHS: proven at 6 s, its bound at least the envelope's."""
    inst = chain_instance({"A": [1.0, 5.0, 1.0], "B": [5.0, 1.0, 5.0]}, [1.0, 1.0, 1.0],
                          {"A": 1, "B": 1}, 1e12)
    result = solve(inst, "highs", time_limit=30)
    assert result.objective_s == pytest.approx(6.0)
    assert result.bound_s >= envelope_bound(inst) * (1 - 1e-12)
