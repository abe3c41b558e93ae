"""Device groups (issue 11): the cost model's replicate and split stages against answers worked
out by hand, the validator's refusals, the plan JSON, and the exact groups DP against brute force
over hybrid plans."""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepart.cost import evaluate, grid_shape, proportional, validate_plan
from edgepart.errors import InputError
from edgepart.instance import load_instance
from edgepart.plan import Mode, Plan, Scheme, Stage
from edgepart.results import SolutionStatus
from edgepart.solvers import groups
from edgepart.solvers.base import PlanSpace, SolveOptions, get_method, solve
from edgepart.solvers.groups import hybrid_lower_bound
from tests.strategies import random_instance

CONV = {"kind": "conv", "in": [1, 4, 4], "out": [1, 4, 4], "kernel": [3, 3], "stride": [1, 1],
        "padding": [1, 1]}


def _instance(layers: list[dict[str, Any]], times: list[dict[str, float]], *,
              classes: tuple[str, ...] = ("a", "a"), bandwidth: float = 48.0,
              source: str | None = None, memory: float = 1e12,
              slow: tuple[str, str, float] | None = None) -> Any:
    """A chain of ``layers`` (id, shape, bytes) on devices d0.. of ``classes``; one link
    (``bandwidth`` bytes/s, no latency) between every pair but ``slow`` (src, dst, bandwidth);
    no source or sink unless given."""
    data: dict[str, Any] = {
        "format_version": 1, "name": "groups",
        "model": {"name": "m", "input_bytes": 64.0, "layers": [
            {"id": x["id"], "op": x["shape"]["kind"] if "shape" in x else "op", "flops": 0,
             "param_bytes": x.get("params", 0.0), "output_bytes": x.get("bytes", 64.0),
             "work_bytes": 0.0, "time_s": t,
             "meta": {"shape": x["shape"]} if "shape" in x else {}}
            for x, t in zip(layers, times, strict=True)],
            "edges": [{"src": layers[v]["id"], "dst": layers[v + 1]["id"]}
                      for v in range(len(layers) - 1)]},
        "devices": [{"id": f"d{k}", "class": c, "memory_bytes": memory}
                    for k, c in enumerate(classes)],
        "links": {"default": {"bandwidth_bytes_per_s": bandwidth, "latency_s": 0.0}},
        "cost_model": {"overlap": True, "transfer": "relay"}}
    if source:
        data["source"] = source
    if slow:
        data["links"]["pairs"] = [{"src": slow[0], "dst": slow[1],
                                   "bandwidth_bytes_per_s": slow[2], "latency_s": 0.0}]
    return load_instance(data)


def _split(layers: tuple[str, ...], schemes: dict[str, str], devices: tuple[str, ...] = ("d0",
                                                                                          "d1")
           ) -> Plan:
    return Plan((Stage.group(devices, Mode.SPLIT, layers, schemes),))


# -- the cost model, by hand ---------------------------------------------------------------------


def test_replicate_period_is_harmonic_and_latency_the_slowest_replica() -> None:
    # one layer, 1 s on class a and 3 s on class b, no source or sink: no transfer at all.
    # Replicas take 1 and 1/3 requests per second: period 1 / (1 + 1/3) = 0.75 s; latency is
    # the slower replica's 3 s; each replica holds the layer's 10 parameter bytes.
    inst = _instance([{"id": "x", "params": 10.0}], [{"a": 1.0, "b": 3.0}], classes=("a", "b"))
    m = evaluate(inst, Plan((Stage.group(("d0", "d1"), Mode.REPLICATE, ("x",)),)))
    assert m.bottleneck_s == pytest.approx(0.75)
    assert m.latency_s == pytest.approx(3.0)
    assert m.stages[0].member_memory_bytes == (10.0, 10.0)


def test_replicate_charges_each_replica_its_own_links() -> None:
    # source d2 sends the 64-byte input at 64 B/s (1 s) to whichever replica gets the request:
    # T = max(in 1, compute 2) = 2 for both replicas, period 1 / (1/2 + 1/2) = 1 s, but the
    # source's own send (1 s) is a stage of its own: period max(1, 1) = 1; latency 1 + 2 = 3.
    inst = _instance([{"id": "x"}], [{"a": 2.0}], classes=("a", "a", "a"), bandwidth=64.0,
                     source="d2")
    m = evaluate(inst, Plan((Stage.group(("d0", "d1"), Mode.REPLICATE, ("x",)),)))
    assert m.bottleneck_s == pytest.approx(1.0)
    assert m.latency_s == pytest.approx(3.0)


def test_replica_groups_charge_each_end_its_worst_partner() -> None:
    # x (1 s, 100-byte output) replicated on d0, d1, then y (1 s) on d2, d3; every link 100 B/s
    # (1 s for x's output) except d1 -> d3 at 10 B/s (10 s). Sends: d0 max(1, 1) = 1,
    # d1 max(1, 10) = 10; receives: d2 1, d3 10. With overlap each replica's T is the max of
    # receive, compute and send: stage 0: d0 1, d1 10; stage 1: d2 1, d3 10; both periods
    # 1 / (1/1 + 1/10) = 10/11. Latency: stage 0 max(0 + 1, 0 + 1) = 1, stage 1
    # max(1 + 1, 10 + 1) = 11: 12 s.
    inst = _instance([{"id": "x", "bytes": 100.0}, {"id": "y"}], [{"a": 1.0}, {"a": 1.0}],
                     classes=("a",) * 4, bandwidth=100.0, slow=("d1", "d3", 10.0))
    plan = Plan((Stage.group(("d0", "d1"), Mode.REPLICATE, ("x",)),
                 Stage.group(("d2", "d3"), Mode.REPLICATE, ("y",))))
    m = evaluate(inst, plan)
    assert [st.time_s for st in m.stages] == pytest.approx([10 / 11, 10 / 11])
    assert m.latency_s == pytest.approx(12.0)


def test_split_rows_scatter_halo_and_gather() -> None:
    # conv 1 -> 1 channel, 4 x 4, 3 x 3 kernel, pad 1; input and output 16 floats (64 bytes,
    # 4 bytes each); 2 equal devices, 1 s for the whole layer, 48 B/s links, no latency.
    # rows: d0 (lead) rows [0, 2), d1 rows [2, 4). d1 reads input rows [2-1, 3-1+3) = [1, 4):
    # 3 rows x 4 = 12 floats = 48 bytes from the lead: 1 s. Compute max(1 * 8/16, 1 * 8/16) =
    # 0.5 s. Gather: d1's 8 floats = 32 bytes: 2/3 s. Total 1 + 0.5 + 2/3.
    inst = _instance([{"id": "c", "shape": CONV}], [{"a": 1.0}])
    m = evaluate(inst, _split(("c",), {"c": "rows"}))
    assert m.latency_s == pytest.approx(1 + 0.5 + 2 / 3)
    # grid on 2 devices is 1 x 2 tiles (columns): the same numbers by symmetry
    assert evaluate(inst, _split(("c",), {"c": "grid"})).latency_s == pytest.approx(13 / 6)
    # outc: 1 output channel for 2 equal devices goes to d0 (ties to the earlier device): d1
    # holds nothing and reads nothing: no transfer, compute 1 s on d0
    assert evaluate(inst, _split(("c",), {"c": "outc"})).latency_s == pytest.approx(1.0)


def test_split_halo_exchange_and_all_gather_between_layers() -> None:
    # two such convs (1 s each), rows -> rows: scatter 1 s, conv 0.5 s, then each device needs
    # one neighbour row (4 floats = 16 bytes, 1/3 s) and sends one: the exchange is 1/3 s
    # (each device's sends and receives are one message each), conv 0.5 s, gather 2/3 s.
    inst = _instance([{"id": "c1", "shape": CONV}, {"id": "c2", "shape": CONV}],
                     [{"a": 1.0}, {"a": 1.0}])
    rows = evaluate(inst, _split(("c1", "c2"), {"c1": "rows", "c2": "rows"}))
    assert rows.latency_s == pytest.approx(1 + 0.5 + 1 / 3 + 0.5 + 2 / 3)
    # rows -> outc (re-tiling): c2 under outc on d0 alone (1 channel) needs the whole input:
    # d1 sends its 8 floats (32 bytes, 2/3 s); then d0 computes 1 s and nothing is gathered
    mixed = evaluate(inst, _split(("c1", "c2"), {"c1": "rows", "c2": "outc"}))
    assert mixed.latency_s == pytest.approx(1 + 0.5 + 2 / 3 + 1.0)


def test_outc_all_gather_with_two_channels() -> None:
    # conv 2 -> 2 channels on 4 x 4 (input and output 32 floats = 128 bytes), then the same conv:
    # outc gives each device one channel. The second conv reads the whole input, so each
    # device receives the other's 16 floats (64 bytes) at 64 B/s: 1 s, sending as much.
    two = {**CONV, "in": [2, 4, 4], "out": [2, 4, 4]}
    inst = _instance([{"id": "c1", "shape": two, "bytes": 128.0},
                      {"id": "c2", "shape": two, "bytes": 128.0}],
                     [{"a": 2.0}, {"a": 2.0}], bandwidth=64.0)
    plan = _split(("c1", "c2"), {"c1": "outc", "c2": "outc"})
    # scatter: the input is 64 bytes (16 floats of a 2 x 4 x 4 layout = 2 bytes each); d1 needs
    # all of it: 1 s. conv 1 s (half of 2 s). all-gather 1 s. conv 1 s. gather 16 elements of
    # 4 bytes = 64 bytes: 1 s. Total 5 s.
    assert evaluate(inst, plan).latency_s == pytest.approx(5.0)


def test_split_weights_are_sliced_under_outc_only() -> None:
    two = {**CONV, "in": [2, 4, 4], "out": [2, 4, 4]}
    inst = _instance([{"id": "c", "shape": two, "params": 100.0}], [{"a": 1.0}])
    outc = evaluate(inst, _split(("c",), {"c": "outc"})).stages[0].member_memory_bytes
    rows = evaluate(inst, _split(("c",), {"c": "rows"})).stages[0].member_memory_bytes
    # outc: half the filters (50 bytes) on d1, which receives the whole input for its channel
    # (a non-depthwise conv reads every input channel): 32 elements of 64/32 = 2 bytes
    assert outc[1] == pytest.approx(50.0 + 64.0)
    # rows: all 100 parameter bytes on d1, plus what it receives: input rows [1, 4) of both
    # channels = 24 elements of 64/32 = 2 bytes
    assert rows[1] == pytest.approx(100.0 + 48.0)


def test_split_slices_follow_the_lead_then_device_order() -> None:
    # d1 leads; d0 and d2 follow in device order however the plan lists them
    inst = _instance([{"id": "c", "shape": CONV}], [{"a": 1.0, "b": 3.0}],
                     classes=("a", "b", "a"))
    one = evaluate(inst, _split(("c",), {"c": "rows"}, ("d1", "d0", "d2")))
    two = evaluate(inst, _split(("c",), {"c": "rows"}, ("d1", "d2", "d0")))
    assert one == two


def test_shares_and_grid_shapes() -> None:
    assert proportional(10, [3.0, 1.0]) == [(0, 8), (8, 10)]  # 7.5 and 2.5: tie to the first
    assert proportional(3, [1.0, 1.0, 1.0]) == [(0, 1), (1, 2), (2, 3)]
    assert [grid_shape(m) for m in (2, 3, 4, 6, 8, 9)] == [(1, 2), (1, 3), (2, 2), (2, 3),
                                                          (2, 4), (3, 3)]


# -- the validator ------------------------------------------------------------------------------


def test_validator_refuses_what_cannot_be_split() -> None:
    linear = {"kind": "linear", "in": [16, 1, 1], "out": [4, 1, 1]}
    inst = _instance([{"id": "c", "shape": CONV}, {"id": "fc", "shape": linear},
                      {"id": "x"}], [{"a": 1.0}] * 3, classes=("a", "a", "a"))
    two = ("d0", "d1")
    cases = [
        (Plan((Stage.group(two, Mode.SPLIT, ("c", "fc"), {"c": "rows", "fc": "rows"}),
               Stage("d2", ("x",)))), "layer 'fc' (linear) cannot be split by rows"),
        (Plan((Stage.group(two, Mode.SPLIT, ("c", "fc"), {"c": "rows"}),
               Stage("d2", ("x",)))), "schemes.fc: missing"),
        (Plan((Stage("d2", ("c", "fc")), Stage.group(two, Mode.SPLIT, ("x",), {"x": "outc"}))),
         "layer 'x' has no meta.shape"),
        (Plan((Stage.group(two, Mode.REPLICATE, ("c",)),
               Stage.group(("d1", "d2"), Mode.REPLICATE, ("fc", "x")))),
         "device 'd1' already runs stage 0"),
    ]
    for plan, expected in cases:
        problems = validate_plan(inst, plan)
        assert any(expected in p for p in problems), (expected, problems)


def test_validator_checks_memory_of_every_replica() -> None:
    inst = _instance([{"id": "x", "params": 100.0}], [{"a": 1.0, "b": 1.0}], classes=("a", "b"),
                     memory=99.0)
    problems = validate_plan(inst, Plan((Stage.group(("d0", "d1"), Mode.REPLICATE, ("x",)),)))
    assert len(problems) == 2 and "'d1'" in problems[1]


def test_groups_need_relay_transfers_and_chains_for_split() -> None:
    data = random_instance(3, n=3, nd=2, shape="forward", transfer="direct")
    inst = load_instance(data)
    plan = Plan((Stage.group(("d0", "d1"), Mode.REPLICATE, ("l0", "l1", "l2")),))
    assert "relay" in validate_plan(inst, plan)[0]


def test_plan_json_round_trip_and_errors() -> None:
    plan = Plan((Stage("d0", ("a",)),
                 Stage.group(("d1", "d2"), Mode.SPLIT, ("b",), {"b": Scheme.ROWS})))
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.stages == plan.stages
    assert plan.to_dict()["stages"][0] == {"device": "d0", "layers": ["a"]}
    bad = [({"devices": ["d0"], "mode": "split", "layers": ["a"]}, "devices: must list at least"),
           ({"devices": ["d0", "d1"], "mode": "pipe", "layers": ["a"]}, "mode: must be one of"),
           ({"devices": ["d0", "d1"], "mode": "split", "layers": ["a"], "schemes": {"a": "x"}},
            "schemes.a: must be one of"),
           ({"devices": ["d0", "d1"], "mode": "replicate", "layers": ["a"],
             "schemes": {"a": "rows"}}, "only a split stage")]
    for raw, expected in bad:
        with pytest.raises(InputError, match=expected):
            Plan.from_dict({"stages": [raw]})


def test_plan_space_option_and_method_routing() -> None:
    with pytest.raises(InputError, match="plan_space"):
        SolveOptions(plan_space="everything")
    with pytest.raises(InputError, match="pipeline plans only"):
        get_method("cpsat", "hybrid")
    assert get_method("auto", "hybrid") is get_method("groups")


# -- the exact DP against brute force -----------------------------------------------------------


def _shapes(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """A consistent chain of small layer shapes (rows and columns drawn apart, so that rows
    and the grid's columns differ): convs, pools, elementwise layers, then possibly linear
    layers."""
    c, h, w = rng.randint(1, 3), rng.randint(2, 6), rng.randint(2, 6)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        kind = rng.choice(["conv", "conv", "pool", "elementwise", "linear"] if h * w > 1
                          else ["linear", "elementwise"])
        inp = [c, h, w]
        if kind == "conv":
            k, s = rng.choice([(1, 1), (3, 1), (3, 2)])
            c, h, w = (rng.randint(1, 4), (h + 2 * (k // 2) - k) // s + 1,
                       (w + 2 * (k // 2) - k) // s + 1)
            out.append({"kind": kind, "in": inp, "out": [c, h, w], "kernel": [k, k],
                        "stride": [s, s], "padding": [k // 2, k // 2]})
        elif kind == "pool" and min(h, w) >= 2:
            h, w = h // 2, w // 2
            out.append({"kind": kind, "in": inp, "out": [c, h, w], "kernel": [2, 2],
                        "stride": [2, 2], "padding": [0, 0]})
        elif kind == "linear":
            c, h, w = rng.randint(1, 5), 1, 1
            out.append({"kind": kind, "in": [math.prod(inp), 1, 1], "out": [c, 1, 1]})
        else:
            out.append({"kind": "elementwise", "in": inp, "out": inp})
    return out


def tiny(seed: int, n: int, nd: int) -> Any:
    """A random chain (tests/strategies.py) whose layers get random consistent shapes."""
    data = random_instance(seed, n=n, nd=nd, chain=True, memory=seed % 3 == 0)
    rng = random.Random(seed)
    for layer, shape in zip(data["model"]["layers"], _shapes(rng, n), strict=True):
        layer["meta"] = {"shape": shape}
    data["cost_model"]["overlap"] = seed % 2 == 0
    return load_instance(data)


SPACES = [PlanSpace.REPLICATE, PlanSpace.SPLIT, PlanSpace.HYBRID]


def _agree(inst: Any, space: PlanSpace, objective: str) -> Any:
    options = SolveOptions(objective=objective, plan_space=space)
    exact = solve(inst, "groups", options)
    brute = solve(inst, "brute", options)
    assert exact.status is brute.status, (exact.message, brute.message)
    if brute.has_plan:
        assert exact.status is SolutionStatus.OPTIMAL
        assert exact.objective_s == pytest.approx(brute.objective_s, rel=1e-9)
    return brute


def test_dp_matches_brute_force_and_covers_every_mode_and_scheme() -> None:
    # fixed draws: 3 layers on 3 devices and 4 layers on 2 devices, both objectives, every
    # plan space. Every mode and every scheme must appear in some brute-force optimum, so the
    # agreement covers them all.
    seen: set[str] = set()
    for seed in range(10):
        inst = tiny(seed, n=3 if seed % 2 else 4, nd=3 if seed % 2 else 2)
        for space in SPACES:
            for objective in ("latency", "bottleneck"):
                brute = _agree(inst, space, objective)
                for st_ in brute.plan.stages if brute.has_plan else ():
                    seen.add(st_.mode.value)
                    seen.update(s.value for _, s in st_.schemes)
    assert seen >= {"single", "replicate", "split", "outc", "rows", "grid"}, seen


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), space=st.sampled_from(SPACES),
       objective=st.sampled_from(["latency", "bottleneck"]))
def test_dp_matches_brute_force_property(seed: int, space: PlanSpace, objective: str) -> None:
    _agree(tiny(seed, n=3, nd=3), space, objective)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), objective=st.sampled_from(["latency", "bottleneck"]))
def test_hybrid_never_worse_than_pipeline(seed: int, objective: str) -> None:
    inst = tiny(seed, n=5, nd=3)
    pipeline = solve(inst, "auto", SolveOptions(objective=objective))
    hybrid = solve(inst, "groups", SolveOptions(objective=objective, plan_space="hybrid"))
    assert pipeline.status is SolutionStatus.OPTIMAL or not pipeline.has_plan
    if pipeline.has_plan:
        assert hybrid.status is SolutionStatus.OPTIMAL
        assert hybrid.objective_s <= pipeline.objective_s * (1 + 1e-9)
    # the DP over single-device stages is itself the pipeline optimum on a chain
    alone = solve(inst, "groups", SolveOptions(objective=objective))
    assert alone.has_plan == pipeline.has_plan
    if alone.has_plan:
        assert alone.objective_s == pytest.approx(pipeline.objective_s, rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_dp_matches_brute_force_under_limits(seed: int) -> None:
    # the period under a latency limit and the latency under a period limit, each limit 10%
    # above the other objective's own optimum (brute force's), so it binds or nearly does
    inst = tiny(seed, n=3, nd=3)
    for objective, other, key in (("bottleneck", "latency", "max_latency"),
                                  ("latency", "bottleneck", "max_period")):
        free = solve(inst, "brute", SolveOptions(objective=other, plan_space="hybrid"))
        if not free.has_plan:
            continue
        options = SolveOptions(objective=objective, plan_space="hybrid",
                               **{key: 1.1 * free.objective_s})
        exact, brute = solve(inst, "groups", options), solve(inst, "brute", options)
        assert exact.status is brute.status is SolutionStatus.OPTIMAL
        assert exact.objective_s == pytest.approx(brute.objective_s, rel=1e-9)


def dag(seed: int, n: int, nd: int, transfer: str = "relay") -> Any:
    """A random DAG (several entries and exits where drawn) whose layers keep one feature map
    shape [c, h, w], so that every path of it can be split (convs and pools with a 3 x 3 kernel,
    stride 1 and padding 1, elementwise layers); exit layers are sometimes linear (outc only).
    Tensors are 100x smaller than tests/strategies.py draws them, so that splits often pay."""
    data = random_instance(seed, n=n, nd=nd, shape="dag" if seed % 2 else "forward",
                           transfer=transfer, memory=seed % 3 == 0)
    rng = random.Random(seed)
    c, h, w = rng.randint(1, 3), rng.randint(1, 5), rng.randint(2, 6)  # grid wins on wide maps
    exits = {e["src"] for e in data["model"]["edges"]}
    data["model"]["input_bytes"] /= 100  # cheap messages, so that splitting pays
    for layer in data["model"]["layers"]:
        layer["output_bytes"] /= 100
        kind = rng.choice(["conv", "pool", "elementwise"]
                          + (["linear"] if layer["id"] not in exits else []))
        shape: dict[str, Any] = {"kind": kind, "in": [c, h, w], "out": [c, h, w]}
        if kind in ("conv", "pool"):
            shape.update(kernel=[3, 3], stride=[1, 1], padding=[1, 1])
        if kind == "linear":
            shape = {"kind": kind, "in": [c * h * w, 1, 1], "out": [rng.randint(1, 4), 1, 1]}
        layer["meta"] = {"shape": shape}
    data["cost_model"]["overlap"] = seed % 4 < 2
    return load_instance(data)


def test_dp_matches_brute_force_on_dags() -> None:
    # random DAGs (forward and general, several entries and exits) with shapes: the DP over
    # ideals agrees with brute force over every hybrid plan, and some optimum splits a DAG's
    # path, so the DAG rule of split stages (cost.split_path_problem) is exercised
    dags = 0
    seen: set[str] = set()
    for seed in range(14):
        inst = dag(seed, n=4, nd=3 if seed % 3 else 2)
        dags += not inst.model.is_chain
        for space in SPACES:
            for objective in ("latency", "bottleneck"):
                brute = _agree(inst, space, objective)
                for st_ in brute.plan.stages if brute.has_plan and not inst.model.is_chain else ():
                    seen.add(st_.mode.value)
                    seen.update(s.value for _, s in st_.schemes)
    assert dags >= 6
    assert seen >= {"single", "replicate", "split", "outc", "rows", "grid"}, seen


def test_split_stage_on_a_dag_must_be_a_path() -> None:
    # a -> b, a -> c, b -> d, c -> d (a diamond): {b} and {a} can be split; {a, b} cannot (a's
    # output is read by c too: a fork); {b, d} neither (d reads c: a join)
    conv = {**CONV}
    data = {"format_version": 1, "name": "diamond",
            "model": {"name": "m", "input_bytes": 64.0, "layers": [
                {"id": x, "op": "conv", "flops": 0, "param_bytes": 0.0, "output_bytes": 64.0,
                 "work_bytes": 0.0, "time_s": {"a": 1.0}, "meta": {"shape": conv}}
                for x in "abcd"],
                "edges": [{"src": s, "dst": d} for s, d in ("ab", "ac", "bd", "cd")]},
            "devices": [{"id": f"d{k}", "class": "a", "memory_bytes": 1e12} for k in range(4)],
            "links": {"default": {"bandwidth_bytes_per_s": 48.0, "latency_s": 0.0}},
            "cost_model": {"overlap": True, "transfer": "relay"}}
    inst = load_instance(data)
    two = ("d0", "d1")

    def plan(split: tuple[str, ...]) -> Plan:
        rest = [x for x in "abcd" if x not in split]
        before = tuple(x for x in rest if x < split[0])
        after = tuple(x for x in rest if x > split[0])
        stages = ([Stage("d2", before)] if before else []) + [
            Stage.group(two, Mode.SPLIT, split, {x: "rows" for x in split})] + (
            [Stage("d3", after)] if after else [])
        return Plan(tuple(stages))

    assert validate_plan(inst, plan(("b",))) == []
    assert validate_plan(inst, plan(("a",))) == []
    assert "not consecutive on one path" in validate_plan(inst, plan(("a", "b")))[0]
    assert "reads 2 tensors" in validate_plan(inst, plan(("d",)))[0]


def test_beyond_the_dp_the_best_known_plan_has_a_valid_bound() -> None:
    # 13 devices with links drawn per pair, so 13 types of one device and 2**13 = 8192 states
    # of used devices (> MAX_STATES): the DP is not tried; the answer is the pipeline optimum
    # (auto proves it on this chain) or a better group baseline, with the fractional work bound
    # below it
    inst = load_instance(random_instance(2, n=3, nd=13, chain=True))
    for objective in ("latency", "bottleneck"):
        r = solve(inst, "groups", SolveOptions(plan_space="hybrid", objective=objective))
        pipeline = solve(inst, "auto", SolveOptions(objective=objective))
        # (no layer has a shape: the least latency is the pipeline optimum, no DP needed)
        why = ("at most 4096 such states, got 8192" if objective == "bottleneck"
               else "the least latency is the pipeline optimum")
        assert why in r.message and r.has_plan
        assert r.objective_s <= pipeline.objective_s * (1 + 1e-9)
        assert r.bound_s <= r.objective_s * (1 + 1e-9)
        assert r.status in (SolutionStatus.FEASIBLE, SolutionStatus.OPTIMAL)


def test_dp_stops_at_its_time_limit() -> None:
    inst = tiny(4, n=6, nd=6)
    start = time.perf_counter()
    r = solve(inst, "groups", SolveOptions(plan_space="hybrid", time_limit=0.01))
    assert r.termination.value == "time_limit" and time.perf_counter() - start < 5


def test_without_a_time_limit_the_dp_has_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # no --time-limit: the DP stops after DP_SECONDS (here 0.01 s) and the fallback answers
    monkeypatch.setattr(groups, "DP_SECONDS", 0.01)
    r = solve(tiny(4, n=6, nd=6), "groups", SolveOptions(plan_space=PlanSpace.HYBRID))
    assert "time limit before the DP finished" in r.message and r.has_plan


def test_fractional_work_bound_by_hand() -> None:
    # one layer, 1 s on class a and 3 s on class b: shared in proportion to speed it takes
    # 1 / (1 + 1/3) = 0.75 s, for latency and period alike (one layer: the work term is
    # w / sum s = 1 / (1 + 1/3) too)
    inst = _instance([{"id": "x", "shape": CONV}], [{"a": 1.0, "b": 3.0}], classes=("a", "b"))
    assert hybrid_lower_bound(inst, "latency") == pytest.approx(0.75)
    assert hybrid_lower_bound(inst, "bottleneck") == pytest.approx(0.75)
    # two layers of 1 s on two equal devices: latency >= 0.5 + 0.5; period >= 2 s of work
    # over 2 devices = 1 s
    two = _instance([{"id": "x", "shape": CONV}, {"id": "y", "shape": CONV}],
                    [{"a": 1.0}, {"a": 1.0}])
    assert hybrid_lower_bound(two, "latency") == pytest.approx(1.0)
    assert hybrid_lower_bound(two, "bottleneck") == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(16))
def test_fractional_work_bound_is_below_every_hybrid_optimum(seed: int) -> None:
    # brute force over every hybrid plan of tiny chains and DAGs (memory and pinned layers
    # drawn), both objectives: the bound never exceeds the optimum
    inst = dag(seed, n=4, nd=3) if seed % 2 else tiny(seed, n=4, nd=3)
    for objective in ("latency", "bottleneck"):
        brute = solve(inst, "brute", SolveOptions(objective=objective, plan_space="hybrid"))
        if brute.has_plan:
            assert hybrid_lower_bound(inst, objective) <= brute.objective_s * (1 + 1e-12)


def test_dp_splits_no_stage_whose_shapes_do_not_chain() -> None:
    # c2 claims to read [2, 4, 4] but c1 makes [1, 4, 4]: the validator refuses a split stage
    # holding both, so the DP must not build one (it would be the fastest: the input is
    # scattered once). It agrees with brute force, whose plans all pass the validator.
    wrong = {**CONV, "in": [2, 4, 4]}
    inst = _instance([{"id": "c1", "shape": CONV}, {"id": "c2", "shape": wrong}],
                     [{"a": 1.0}, {"a": 1.0}], classes=("a",) * 4, bandwidth=1e6)
    assert "reads shape [2, 4, 4]" in validate_plan(inst, _split(("c1", "c2"),
                                                              {"c1": "rows", "c2": "rows"}))[0]
    for objective in ("latency", "bottleneck"):
        exact = _agree(inst, PlanSpace.SPLIT, objective)
        assert exact.has_plan


@pytest.mark.parametrize("seed", range(8))
def test_without_splits_the_least_latency_is_the_pipeline_optimum(seed: int) -> None:
    # no layer has a shape, so only replicas are added: brute force over every replicate plan
    # finds no latency below the pipeline optimum (groups._pipeline_latency_is_hybrid, the
    # reason the fallback may use the pipeline solver's latency bound)
    inst = load_instance(random_instance(seed, n=3, nd=3, memory=seed % 2 == 0))
    for space in ("pipeline", "hybrid"):
        options = SolveOptions(objective="latency", plan_space=space)
        found = solve(inst, "brute", options)
        if space == "pipeline":
            pipeline = found
        elif found.has_plan:
            assert found.objective_s == pytest.approx(pipeline.objective_s, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_fallback_answers_within_its_bound_and_the_pipeline_optimum(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # the DP is kept from running (no size fits), so groups answers by its fallback: a plan of
    # the plan space (groups of at most --max-group devices), no better than brute force's
    # hybrid optimum (a check of the plan), no worse than the pipeline optimum, and a bound no
    # higher than that optimum
    monkeypatch.setattr(groups, "MAX_WORK", 0)
    inst = dag(seed, n=4, nd=3)
    for objective in ("latency", "bottleneck"):
        options = SolveOptions(objective=objective, plan_space="hybrid",
                               max_group=2 if seed % 2 else None)
        r = solve(inst, "groups", options)
        best = solve(inst, "brute", options)
        pipeline = solve(inst, "brute", SolveOptions(objective=objective))
        assert "arcs (limit 0)" in r.message
        assert r.bound_s <= best.objective_s * (1 + 1e-9) if best.has_plan else True
        if pipeline.has_plan:
            assert r.has_plan and r.objective_s <= pipeline.objective_s * (1 + 1e-9)
            assert r.objective_s >= best.objective_s * (1 - 1e-9)
            assert all(len(st_.members) <= (options.max_group or 3) for st_ in r.plan.stages)


def typed(seed: int, n: int = 3) -> Any:
    """A random chain with shapes (as :func:`tiny`) on 4 devices of 2 classes drawn per device,
    so that 2 or 3 devices often share a type: one speed and one memory per class (tight on
    a third of the draws), and every link a function of the ordered pair of classes (between two
    devices of one class too). A source, a sink or both on some draws: each a type of its own."""
    data = random_instance(seed, n=n, nd=4, chain=True, classes=2,
                           ends=("source", False, True)[seed % 3])
    rng = random.Random(seed + 1)
    for layer, shape in zip(data["model"]["layers"], _shapes(rng, n), strict=True):
        layer["meta"] = {"shape": shape}
    names = sorted(data["model"]["layers"][0]["time_s"])
    memory = {c: (rng.randint(20, 60) * 1e5 if seed % 3 == 0 else 1e12) for c in names}
    for dev in data["devices"]:
        dev.update({"class": rng.choice(names), "flops_per_s": 1e7})
        dev["memory_bytes"] = memory[dev["class"]]
    link = {(a, b): {"bandwidth_bytes_per_s": rng.choice([1e6, 4e6, 2e7]),
                     "latency_s": rng.choice([0.0, 0.01])} for a in names for b in names}
    cls = [dev["class"] for dev in data["devices"]]
    data["links"] = {"default": link[names[0], names[0]],
                     "pairs": [{"src": f"d{i}", "dst": f"d{j}", **link[cls[i], cls[j]]}
                               for i in range(4) for j in range(4) if i != j]}
    data["cost_model"]["overlap"] = seed % 2 == 0
    for layer in data["model"]["layers"]:  # no layer pinned to a class some draw lacks
        layer.pop("device_classes", None)
    return load_instance(data)


def test_device_types_are_runs_of_interchangeable_devices() -> None:
    # classes a, b, a, a on one link everywhere, no source or sink: d0, d2 and d3 are
    # interchangeable, but d1 lies between d0 and d2, so the types are the runs {d0}, {d1},
    # {d2, d3} (index order then lists a group's devices by type). Group modes by hand: 3
    # singles; per multiset of 2+ devices a replica set and a split set per type in it as lead:
    # {0,1} 1+2, {0,2} 1+2, {1,2} 1+2, {2,3} 1+1, {0,1,2} 1+3, {0,2,3} 1+2, {1,2,3} 1+2,
    # {0,1,2,3} 1+3 = 25, so 28 (4 distinct devices: 4 + 11 replica sets + 28 led split sets =
    # 43)
    inst = _instance([{"id": "c", "shape": CONV}], [{"a": 1.0, "b": 1.0}],
                     classes=("a", "b", "a", "a"))
    types = groups.device_types(inst)
    assert types.members == ((0,), (1,), (2, 3))
    modes = groups.group_modes(inst, PlanSpace.HYBRID, None, types)
    assert len(modes) == 28
    assert groups.GroupMode(Mode.SPLIT, (2, 0, 1, 3)) in modes  # led by d2, the rest in order
    # at most 2 devices: 3 singles and the pairs {0,1}, {0,2}, {1,2} (1+2 each), {2,3} (1+1)
    assert len(groups.group_modes(inst, PlanSpace.HYBRID, 2, types)) == 3 + 3 * 3 + 2


def test_dp_over_device_types_matches_brute_force() -> None:
    # 4 devices of 2 classes with links per pair of classes: devices of one class in a run of
    # indices (neither the source nor the sink) are one type, so the DP keeps counts per type and
    # prices a group once per multiset of types (groups.device_types); brute force enumerates
    # every device set. On the first 4 draws where some type has 2 or 3 devices they agree in
    # every plan space, and some brute-force optimum uses a group with two devices of one type
    # (what the reduction merges), so the agreement covers it
    merged = shared = 0
    for seed in range(30):
        inst = typed(seed)
        types = groups.device_types(inst)
        if types.n_types == 4:
            continue
        merged += 1
        for space in SPACES:
            for objective in ("latency", "bottleneck"):
                brute = _agree(inst, space, objective)
                for st_ in brute.plan.stages if brute.plan is not None else ():
                    kinds = [next(t for t, m in enumerate(types.members) if inst.device_index[d]
                                  in m) for d in st_.members]
                    shared += len(kinds) > len(set(kinds))
        if merged == 4:
            break
    assert merged == 4 and shared >= 3, (merged, shared)
