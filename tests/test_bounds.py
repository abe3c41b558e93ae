"""The fractional work bound (edgepart.bounds): a hand-derived value, validity against brute force
on the widened generator and on the shipped pinned-layer case, any prices, the size cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import cost_models, random_instance

from edgepart import load_instance, solve
from edgepart.bounds import evaluate_prices, quick_bound, work_bound
from edgepart.cost import lower_bound
from edgepart.instance import Instance


def specialist() -> Instance:
    """A chain a -> b -> c on two devices of classes x and y with free transfers: a takes 1 s on
    either, b and c take 1 s on x and 100 s on y."""
    data = random_instance(0, n=3, nd=2, chain=True, ends=False, uniform_links=True)
    times = {"l0": (1.0, 1.0), "l1": (1.0, 100.0), "l2": (1.0, 100.0)}
    for layer in data["model"]["layers"]:
        layer.update(time_s=dict(zip(("x", "y"), times[layer["id"]], strict=True)),
                     param_bytes=0, work_bytes=0)
    data["devices"][0].update({"class": "x"})
    data["devices"][1].update({"class": "y"})
    data["links"] = {"default": {"bandwidth_bytes_per_s": 1e30, "latency_s": 0.0}}
    return load_instance(data)


def test_the_work_bound_sees_a_device_that_is_good_at_one_layer_only() -> None:
    # By hand, as prices: y_y = q, y_x = 1 - q (one device each). The bound is
    # min(1 - q, q) + 2 min(1 - q, 100 q): for q <= 1/101 it is q + 200 q = 201 q, rising; for
    # 1/101 <= q <= 1/2 it is q + 2 (1 - q) = 2 - q, falling; beyond, smaller still. Best at
    # q = 1/101: 201/101 (the LP: y does all of a and s = 1/101 of b and c, x the rest, both
    # busy 1 + 100 s = 2 - s). The old bound: best times 1, 1, 1; speeds s_x = 1,
    # s_y = max(1/1, 1/100, 1/100) = 1, so 3 / 2 = 1.5. The optimum (brute force): a on y, b and
    # c on x, 2 s (a pipeline cannot split a layer).
    inst = specialist()
    assert work_bound(inst) == pytest.approx(201 / 101)
    assert lower_bound(inst) == pytest.approx(1.5)
    assert quick_bound(inst) == pytest.approx(201 / 101)
    assert quick_bound(inst, "latency") == lower_bound(inst, "latency")
    assert solve(inst, "brute").objective_s == pytest.approx(2.0)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), nd=st.integers(1, 4),
       restrict=st.booleans(), memory=st.booleans(), cost_model=cost_models,
       prices=st.lists(st.floats(0, 10), min_size=4, max_size=4))
def test_the_work_bound_never_exceeds_the_brute_force_optimum(
        seed: int, n: int, nd: int, restrict: bool, memory: bool, cost_model: tuple[str, bool],
        prices: list[float]) -> None:
    inst = load_instance(random_instance(seed, n=n, nd=nd, restrict=restrict, memory=memory,
                                         transfer=cost_model[0], overlap=cost_model[1]))
    best = solve(inst, "brute")
    if not best.has_plan:
        return
    assert work_bound(inst) <= best.objective_s * (1 + 1e-12)
    assert work_bound(inst) >= lower_bound(inst) * (1 - 1e-9) or (
        lower_bound(inst) == max(min(row) for row in inst.times))  # the largest-layer term
    times = np.array(inst.times)  # every device a type of its own: any prices per device
    anything = np.array(prices[:len(inst.devices)])
    ones = np.ones(len(inst.devices))
    assert evaluate_prices(times, ones, anything) <= best.objective_s * (1 + 1e-12)


def test_the_work_bound_with_a_layer_pinned_to_a_slow_device() -> None:
    # tests/cases/lower_bound_pinned_slow.json: optimum 0.66 s (brute force, see test_cost.py)
    inst = load_instance(Path(__file__).parent / "cases" / "lower_bound_pinned_slow.json")
    assert lower_bound(inst) <= work_bound(inst) <= 0.66 * (1 + 1e-12)


def test_too_large_an_lp_gives_no_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgepart.bounds.MAX_LP_ROWS", 1)
    assert work_bound(specialist()) == 0.0
    assert quick_bound(specialist()) == pytest.approx(1.5)
