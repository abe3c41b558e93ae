"""The envelope bound (:func:`edgepart.bounds.envelope_bound`): exact on a chain's compute, never
above the optimum on any instance shape or layer order, and what it adds to the exact driver;
its witness (:func:`edgepart.bounds.envelope`): a plan, the optimum on a chain."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import random_instance
from test_relaxed import chain_instance, exact_optimum

from edgepart import SolutionStatus, evaluate, load_instance, solve, validate_plan
from edgepart.bounds import (
    ENVELOPE_PRECISION,
    ROUNDING,
    envelope,
    envelope_bound,
    quick_bound,
    work_bound,
)
from edgepart.cuts import alive_bytes
from edgepart.formulations.model import Deadline
from edgepart.instance import Instance
from edgepart.results import OPTIMALITY_TOL


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


def diamond(times: dict[str, list[float]], tensor_bytes: tuple[float, ...] = (1.0,) * 4,
            bandwidth: float = 1e12, devices: int = 1) -> Instance:
    """a -> {b, c} -> d (listed a, b, c, d); ``devices`` devices per class; by default free
    transfers; no source or sink."""
    layer = {"op": "op", "flops": 1.0, "param_bytes": 0.0, "work_bytes": 0.0}
    return load_instance({
        "format_version": 1, "name": "diamond", "model": {
            "name": "diamond", "input_bytes": 1.0,
            "edges": [{"src": s, "dst": d} for s, d in
                      (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))],
            "layers": [{**layer, "id": v, "output_bytes": tensor_bytes[k],
                        "time_s": {c: t[k] for c, t in times.items()}}
                       for k, v in enumerate("abcd")]},
        "devices": [{"id": f"{c}{k}", "class": c, "memory_bytes": 1e12, "flops_per_s": 1.0}
                    for c in times for k in range(devices)],
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth, "latency_s": 0.0}},
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


def test_boundaries_whose_transfer_exceeds_the_period_are_no_boundaries() -> None:
    """The diamond on two devices of one class, every layer 1 s, tensors a 10 B and b, c, d
    1 B on 1 B/s links (a transfer of x bytes takes x s). Boundaries: {a} sends a (10 s);
    {a,b} sends a (c still needs it) and b, 11 s; {a,c} 11 s; {a,b,c} sends b and c, 2 s. One
    device: 4 s; two: max(1, 10, 3) = 10 at {a}, 11 at {a,b} and {a,c}, max(3, 2, 1) = 3 at
    {a,b,c}: the optimum is 3 s. Compute alone allows {a,b} | {c,d} at 2 s, which the work bound
    (4 s on 2 devices) and the envelope over prefix signatures (an ideal pass that ignored
    transfers) give; below 3 s the only boundary that sends in time is {a,b,c}, whose first
    stage computes 3 s, so the envelope over the ideals is 3 s."""
    inst = diamond({"A": [1.0] * 4}, (10.0, 1.0, 1.0, 1.0), bandwidth=1.0, devices=2)
    assert solve(inst, "brute").objective_s == pytest.approx(3.0)
    assert work_bound(inst) == pytest.approx(2.0)
    assert 3.0 * (1 - 2 * ENVELOPE_PRECISION) <= envelope_bound(inst) <= 3.0
    # told a 3 s plan exists, it first asks just below 3 s, and proves that plan
    assert envelope_bound(inst, upper=3.0) >= 3.0 * (1 - OPTIMALITY_TOL)
    # no time left for the ideal pass: the prefix signatures' bound only (2 s)
    expired = Deadline.after(-1.0)
    assert 2.0 * (1 - 2 * ENVELOPE_PRECISION) <= envelope_bound(inst, deadline=expired) <= 2.0


def test_a_model_output_is_relayed_to_the_sink() -> None:
    """a -> b (a model output, 10 B) and a -> c -> d (d an output, 1 B; a and c 1 B), every
    time 1 s but b and d 1.5 s (5 s in all), two devices X0 (the sink) and X1, 1 B/s links, no
    source. b's tensor is alive across every boundary after b until the sink takes it: {a,b}
    sends a and b (11 s), {a,b,c} b and c (11 s), {a} 1 s, {a,c} 2 s, {a,c,d} a and d 2 s.
    Two stages with the second on the sink: {a} | {b,c,d} max(1, 1, 4) = 4; {a,c} | {b,d}
    max(2, 2, 3) = 3; {a,c,d} | {b} 3.5; {a,b} and {a,b,c} 11; one stage 5 s; the second
    stage away from the sink sends it b and d, 11 s. The optimum is 3 s. Without b's bytes,
    {a,b} | {c,d} would be 2.5 s; with them, below 3 s the first stage ends at {a} or {a,c}
    and the second has 4 or 3 s left: the envelope is 3 s."""
    layer = {"op": "op", "flops": 1.0, "param_bytes": 0.0, "work_bytes": 0.0}
    times = {"a": 1.0, "b": 1.5, "c": 1.0, "d": 1.5}
    nbytes = {"a": 1.0, "b": 10.0, "c": 1.0, "d": 1.0}
    inst = load_instance({
        "format_version": 1, "name": "outputs", "model": {
            "name": "outputs", "input_bytes": 1.0,
            "edges": [{"src": s, "dst": d} for s, d in (("a", "b"), ("a", "c"), ("c", "d"))],
            "layers": [{**layer, "id": v, "output_bytes": nbytes[v], "time_s": {"X": times[v]}}
                       for v in "abcd"]},
        "devices": [{"id": f"X{k}", "class": "X", "memory_bytes": 1e12, "flops_per_s": 1.0}
                    for k in range(2)],
        "links": {"default": {"bandwidth_bytes_per_s": 1.0, "latency_s": 0.0}},
        "sink": "X0", "cost_model": {"overlap": True, "transfer": "relay"}})
    assert solve(inst, "brute").objective_s == pytest.approx(3.0)
    assert 3.0 * (1 - 2 * ENVELOPE_PRECISION) <= envelope_bound(inst) <= 3.0


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
    optimum = exact_optimum(inst)
    found = envelope(inst, order)
    assert found.bound <= optimum * (1 + 1e-12)
    if found.plan is not None:  # a witness: every layer once, each device at most once
        stages = [st.layers for st in found.plan.stages]
        assert sorted(lid for layers in stages for lid in layers) == sorted(
            layer.id for layer in inst.model.layers)
        assert len({st.device for st in found.plan.stages}) == len(stages)
        if not validate_plan(inst, found.plan):
            assert evaluate(inst, found.plan).bottleneck_s >= optimum * (1 - 1e-12)
    if math.isfinite(optimum):  # told the optimum: pruned rows, the first question below it
        assert envelope_bound(inst, order, upper=optimum) <= optimum * (1 + 1e-12)
        # a floor to start from (the quick bound; the optimum itself: no question to ask)
        for lower in (quick_bound(inst), optimum):
            assert envelope(inst, order, upper=optimum, lower=lower).bound <= optimum * (
                1 + 1e-12)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 5))
def test_on_a_chain_the_witness_is_an_optimal_plan(seed: int, n: int, nd: int) -> None:
    """A chain with the same link between every two devices, overlap and no source, sink or
    memory limit: the relaxation is then the problem itself (every ideal is a prefix, so the
    stages nest; a boundary's least transfer is its transfer), so its witness at the least
    period met is an optimal plan (brute force), and the bound meets it."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape="chain", ends=False,
                                         uniform_links=True))
    optimum = exact_optimum(inst)
    found = envelope(inst)
    assert found.plan is not None and not validate_plan(inst, found.plan)
    period = evaluate(inst, found.plan).bottleneck_s
    assert period == pytest.approx(optimum, rel=1e-9)
    assert found.bound <= optimum <= found.bound * (1 + 2 * ENVELOPE_PRECISION)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 7), nd=st.integers(1, 4),
       shape=st.sampled_from(["chain", "forward", "dag"]),
       ends=st.sampled_from([True, False, "source", "sink"]), overlap=st.booleans(),
       transfer=st.sampled_from(["relay", "relay", "direct"]), shuffle=st.booleans())
def test_the_envelope_is_the_optimum_of_its_relaxation(
        seed: int, n: int, nd: int, shape: str, ends: bool | str, overlap: bool, transfer: str,
        shuffle: bool) -> None:
    """Against a plain reimplementation of the relaxation over explicit sets: every ideal by
    brute force over the layer subsets, its relay bytes by :func:`edgepart.cuts.alive_bytes`,
    and the ideals reachable with each multiset of device types as a set. The bound returned
    is a theta that relaxation does not meet (or 0, where it meets every theta: a layer pinned
    away from a type costs that type 0 s), and within the bisection's precision of one it
    meets."""
    inst = load_instance(random_instance(seed, n=n, nd=nd, shape=shape, ends=ends,
                                         overlap=overlap, transfer=transfer,
                                         restrict=seed % 3))
    order = random_topological_order(inst, random.Random(seed)) if shuffle else None
    relaxation = SetRelaxation.of(inst)
    low = envelope_bound(inst, order) / (1 - ROUNDING)
    assert low == 0 or not relaxation.met(low)
    assert relaxation.met(low * (1 + 2 * ENVELOPE_PRECISION) + 1e-12)


@dataclass
class SetRelaxation:
    """The envelope's relaxation written out: a stage of type t may go from any ideal I to
    any ideal J with W_t(J) - W_t(I) <= theta (plus J's transfer without overlap), where the
    boundary J (unless it is every layer) sends within theta: min latency + B(J) / max
    bandwidth (relay transfers; no condition for direct ones)."""

    work: dict[frozenset[int], np.ndarray]
    transfer: dict[frozenset[int], float]
    counts: list[int]
    overlap: bool

    @classmethod
    def of(cls, inst: Instance) -> SetRelaxation:
        g, n = inst.model, len(inst.model.layers)
        columns: dict[tuple[float, ...], int] = {}
        for column in zip(*inst.times, strict=True):
            columns[column] = columns.get(column, 0) + 1
        times = np.array([[0.0 if math.isinf(x) else x for x in c] for c in columns]).T
        ideals = [frozenset(v for v in range(n) if mask >> v & 1) for mask in range(1 << n)
                  if all(mask >> u & 1 for v in range(n) if mask >> v & 1 for u in g.pred[v])]
        sets = np.array([[v in ideal for v in range(n)] for ideal in ideals], dtype=bool)
        links = [inst.link(i, j) for i in range(len(inst.devices))
                 for j in range(len(inst.devices)) if i != j]
        relay = inst.cost_model.transfer.value == "relay" and links
        sent = alive_bytes(inst, sets)
        transfer = {ideal: (min(x.latency_s for x in links)
                            + b / max(x.bandwidth_bytes_per_s for x in links))
                    if relay and 0 < len(ideal) < n else 0.0
                    for ideal, b in zip(ideals, sent, strict=True)}
        work = {ideal: times[sorted(ideal)].sum(axis=0) for ideal in ideals}
        return cls(work, transfer, list(columns.values()), inst.cost_model.overlap)

    def met(self, theta: float) -> bool:
        slack = theta * (1 + ROUNDING)
        full = max(self.work, key=len)
        boundaries = [j for j in self.work if self.transfer[j] <= slack]
        reached = {(0,) * len(self.counts): {frozenset()}}
        for s in sorted(itertools.product(*(range(c + 1) for c in self.counts)), key=sum):
            for i in reached.get(s, ()):
                for t, count in enumerate(self.counts):
                    if s[t] == count:
                        continue
                    if self.work[full][t] - self.work[i][t] <= slack:
                        return True
                    nxt = (*s[:t], s[t] + 1, *s[t + 1:])
                    reached.setdefault(nxt, set()).update(
                        j for j in boundaries
                        if self.work[j][t] + (0.0 if self.overlap else self.transfer[j])
                        - self.work[i][t] <= slack)
        return False


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
    """The chain above through HiGHS: the envelope meets the warm start's 6 s (the optimum), so
    the driver proves it with no solver call."""
    inst = chain_instance({"A": [1.0, 5.0, 1.0], "B": [5.0, 1.0, 5.0]}, [1.0, 1.0, 1.0],
                          {"A": 1, "B": 1}, 1e12)
    result = solve(inst, "highs", time_limit=30)
    assert result.status is SolutionStatus.OPTIMAL
    assert result.objective_s == pytest.approx(6.0)
    assert result.bound_s >= 6.0 * (1 - OPTIMALITY_TOL)
    assert result.extra["backend"] == "bounds"


def test_the_exact_driver_proves_the_witness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain above with no warm start at all (``_warm_start`` answers ``None``): the
    envelope's witness is a plan of 6 s, which its bound proves; no solver is called."""
    from edgepart.solvers import exact
    monkeypatch.setattr(exact, "_warm_start", lambda inst, options: None)
    inst = chain_instance({"A": [1.0, 5.0, 1.0], "B": [5.0, 1.0, 5.0]}, [1.0, 1.0, 1.0],
                          {"A": 1, "B": 1}, 1e12)
    result = solve(inst, "highs", time_limit=30)
    assert result.status is SolutionStatus.OPTIMAL
    assert result.objective_s == pytest.approx(6.0)
    assert result.extra["formulation"] == "envelope"
    assert "witness" in result.solver_version
